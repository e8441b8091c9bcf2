//! The `herd` command line: parses arguments and hands each command to the
//! library. Nothing here knows about images or units beyond wiring.

mod cli;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Build OCI images and pods from directories; generate systemd units from
/// environment directories and deploy them to their machines.
#[derive(Parser)]
#[command(name = "herd", version = cli::meta::VERSION, about, long_about = None, propagate_version = true)]
struct Herd {
    #[command(flatten)]
    output: cli::OutputArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(cli::scaffold::InitArgs),
    Build(cli::build::BuildArgs),
    Test(cli::test::TestArgs),
    Try(cli::try_::TryArgs),
    Attributes(cli::attributes::AttributesArgs),
    Graph(cli::build::GraphArgs),
    Images(cli::images::ImagesArgs),
    Inspect(cli::images::InspectArgs),
    Tag(cli::images::TagArgs),
    Rmi(cli::images::RmiArgs),
    Kube(cli::pods::KubeArgs),
    Install(cli::pods::InstallArgs),
    Gc(cli::store::GcArgs),
    Clean(cli::store::CleanArgs),
    Fsck(cli::store::FsckArgs),
    Push(cli::push::PushArgs),
    Pull(cli::pull::PullArgs),
    Gen(cli::r#gen::GenArgs),
    Deploy(cli::deploy::DeployArgs),
    Status(cli::deploy::StatusArgs),
    Doctor(cli::doctor::DoctorArgs),
    Version(cli::meta::VersionArgs),
    Completions(cli::meta::CompletionsArgs),
    Man(cli::meta::ManArgs),
    // Commands are listed in the order a user meets them; each lives in
    // src/cli/<command>.rs.
}

fn main() -> ExitCode {
    let herd = Herd::parse();
    cli::init_logging(&herd.output);
    let result = match herd.command {
        Command::Init(args) => cli::scaffold::run(args),
        Command::Build(args) => cli::build::run(args),
        Command::Test(args) => cli::test::run(args),
        Command::Try(args) => cli::try_::run(args),
        Command::Attributes(args) => cli::attributes::run(args),
        Command::Graph(args) => cli::build::run_graph(args),
        Command::Images(args) => cli::images::run_images(args),
        Command::Inspect(args) => cli::images::run_inspect(args),
        Command::Tag(args) => cli::images::run_tag(args),
        Command::Rmi(args) => cli::images::run_rmi(args),
        Command::Kube(args) => cli::pods::run_kube(args),
        Command::Install(args) => cli::pods::run_install(args),
        Command::Gc(args) => cli::store::run_gc(args),
        Command::Clean(args) => cli::store::run_clean(args),
        Command::Fsck(args) => cli::store::run_fsck(args),
        Command::Push(args) => cli::push::run(args),
        Command::Pull(args) => cli::pull::run(args),
        Command::Gen(args) => cli::r#gen::run(args),
        Command::Deploy(args) => cli::deploy::run_deploy(args),
        Command::Status(args) => cli::deploy::run_status(args),
        Command::Doctor(args) => cli::doctor::run(args),
        Command::Version(args) => cli::meta::run_version(args),
        Command::Completions(args) => cli::meta::run_completions(args, Herd::command()),
        Command::Man(args) => cli::meta::run_man(args, Herd::command()),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            cli::report_error(&error);
            ExitCode::from(2)
        }
    }
}
