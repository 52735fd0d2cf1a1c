//! Prints the demo publisher's public key as a C array (used by examples/c/quickstart.c).
fn main() {
    let k = tessera::publisher::PublisherKey::demo();
    let bytes = k.public_key().to_bytes();
    let items: Vec<String> = bytes.iter().map(|b| format!("0x{b:02x}")).collect();
    println!("/* vendor {} */", k.vendor_id);
    for chunk in items.chunks(8) {
        println!("    {},", chunk.join(", "));
    }
}
