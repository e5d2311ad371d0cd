//! MQTT wire protocol: packet values (`packet`), bytes <-> packets (`codec`),
//! topic name and filter rules (`topic`). No sockets, no clocks; every
//! length a peer sends is checked against a caller-given maximum before
//! anything is allocated for it.

pub mod codec;
pub mod packet;
pub mod topic;

pub use packet::*;
