use lambda_runtime::{Error, run, service_fn, tracing};
use reverse_privatelink::Function;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let function = Function::from_env().await?;
    run(service_fn(|event| function.handle(event))).await
}
