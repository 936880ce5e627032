//! The one integration test binary: the function against moto server, the
//! CloudFormation protocol against local listeners, the built binary through a
//! Lambda Runtime API, and the paths moto lacks at the SDK layer.

mod binary;
mod connections;
mod databases;
mod diagnose;
mod fleet;
mod following;
mod lifecycle;
mod privileges;
mod protocol;
mod real_account;
mod reliability;
mod retries;
mod second_wave;
mod simulator;
mod soak;
mod support;
mod teardown;
mod template;
mod traffic;
mod validation;
