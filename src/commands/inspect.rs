//! `inspect`: explain a service account token.

use super::CommandError;
use crate::cli::InspectArgs;

pub async fn run(args: &InspectArgs) -> Result<(), CommandError> {
    todo!("{args:?}")
}
