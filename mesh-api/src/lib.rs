//! What Trellis reads and decides, as plain data and pure functions, shared by the
//! controller, the node and (later) `mesh-ctl`.

pub mod identity;
pub mod objects;
pub mod peer_authentication;
