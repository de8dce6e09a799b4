//! Compiles `proto/weft/control/v1/control.proto` with `protox` (a protobuf compiler in pure
//! Rust, so no system `protoc` is needed) and generates the tonic services and clients from the
//! descriptor set; `src/lib.rs` includes them as `weft_control::proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/weft/control/v1/control.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
