//! midge: a small, highly available MQTT broker for Linux edge gateways.
//!
//! Data flows one way: socket (`net`) -> codec (`mqtt`) -> broker state
//! machine (`broker`) -> actions -> codec -> socket. `mqtt` and `broker` do
//! no I/O and read no clock.

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod dynsec;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod net;
pub mod store;
