//! Compiles `proto/*.proto` with protox (pure Rust, no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(["proto/otlp_wire.proto"], ["proto"])?;
    prost_build::Config::new()
        // `bytes` fields borrow from the received buffer instead of copying.
        .bytes(["."])
        .compile_fds(files)?;
    Ok(())
}
