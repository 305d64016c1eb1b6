//! The device management client: setup, the agent and certificate enrollment.
