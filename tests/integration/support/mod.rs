pub mod harness;
pub mod http;
pub mod moto;
pub mod runtime;
pub mod proxy;
