//! `herd-init`: the entrypoint of every image herd builds. All logic is in
//! `herd::init`; see there.

fn main() {
    let code = herd::init::main(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
