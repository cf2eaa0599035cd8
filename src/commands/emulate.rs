//! `emulate`: the embedded issuer plus the kubelet's projector, no cluster needed.

use super::CommandError;
use crate::cli::EmulateArgs;

pub async fn run(args: EmulateArgs) -> Result<(), CommandError> {
    todo!("{args:?}")
}
