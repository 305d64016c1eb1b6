//! The command lines of the client's programs: `dmclientsetup` ([`setup`]), `dmsvc`
//! ([`svc`]) and `dmcertenroll` ([`certenroll`]). Each is a `main` taking the program's
//! arguments, which the client's one program (`dm`, the `device` crate) calls by the name it is
//! started with or by its first argument.

pub mod certenroll;
pub mod setup;
pub mod svc;
