pub async fn run(_ctx: &super::Ctx, _a: Args) -> anyhow::Result<()> {
    Ok(())
}
#[derive(Debug, clap::Args)]
pub struct Args {}
