pub mod cloudformation;
pub mod dns;
pub mod harness;
pub mod http;
pub mod moto;
pub mod proxy;
pub mod runtime;
pub mod simulator;
