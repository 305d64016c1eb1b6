//! The management point and the publisher tools.
