//! The first projection: every token requested, then every volume written, before the
//! refresher keeps them fresh ([`Refresher::run`]); also `--once` and the emulator's start.

use std::future::Future;

use super::jobs::{Done, Jobs};
use super::{Refresher, RefresherError};
use crate::source::{SourceError, TokenSource};

impl<S: TokenSource> Refresher<S> {
    /// Writes every volume once. A rejected request (a lifetime or binding the issuer refuses) is
    /// an error here, since retrying cannot fix it; nothing is written then.
    pub async fn project_all(&mut self) -> Result<usize, RefresherError> {
        let written = self.project(false, &mut std::future::pending()).await?;
        Ok(written.unwrap_or_default())
    }

    /// Writes every volume once and fails on any failure, retryable or not (`--once`).
    pub async fn project_once(&mut self) -> Result<usize, RefresherError> {
        let written = self.project(true, &mut std::future::pending()).await?;
        Ok(written.unwrap_or_default())
    }

    /// Requests every token (a volume's tokens together, [`MAX_IN_FLIGHT`] volumes at once),
    /// then writes each volume whose tokens are all in hand, as many at once. Returns how many
    /// volumes were written, or `None` when `stop` completed first: requests still waiting are
    /// abandoned, writes in progress finished (10,000 volumes on a slow disk take half a minute;
    /// SIGTERM must not wait for all of them). `stop` is not polled again once it completed.
    pub(super) async fn project(
        &mut self,
        strict: bool,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Option<usize>, RefresherError> {
        for (volume_index, repair) in std::mem::take(&mut self.repairs.at_start) {
            if let Some(state) = self.volumes.get(volume_index) {
                self.repairs.report(&state.volume, [repair]);
            }
        }
        let mut jobs = Jobs::default();
        let mut pending = 0..self.volumes.len();
        let mut first_error: Option<(usize, usize, SourceError)> = None;
        loop {
            while jobs.has_room() {
                let Some(volume_index) = pending.next() else {
                    break;
                };
                let tokens = (0..self.volumes[volume_index].tokens.len()).collect();
                self.request(&mut jobs, volume_index, tokens);
            }
            let done = tokio::select! {
                done = jobs.next(self.clock.as_ref()) => done,
                _ = &mut *stop => return Ok(None),
            };
            let Some(Done::Answers { volume, answers }) = done else {
                break;
            };
            self.volumes[volume].busy = false;
            for (token, answer) in answers {
                if let Err(err) = self.record_answer(volume, token, answer) {
                    let fatal = strict || matches!(err, SourceError::Rejected(_));
                    let earlier = first_error
                        .as_ref()
                        .is_some_and(|(v, t, _)| (*v, *t) < (volume, token));
                    if fatal && !earlier {
                        first_error = Some((volume, token, err));
                    }
                }
            }
        }
        if let Some((volume_index, token_index, err)) = first_error {
            let state = &self.volumes[volume_index];
            return Err(RefresherError::Rejected {
                volume: state.volume.plan.name.clone(),
                path: state.tokens[token_index].path.clone(),
                source: err,
            });
        }
        let mut pending = 0..self.volumes.len();
        let mut written = 0;
        let mut failed: Option<RefresherError> = None;
        let mut stopped = false;
        loop {
            // After a failure or `stop` nothing more is started; the writes in flight finish.
            while jobs.has_room() && failed.is_none() && !stopped {
                let Some(volume_index) = pending.next() else {
                    break;
                };
                self.write(&mut jobs, volume_index);
            }
            let done = tokio::select! {
                done = jobs.next(self.clock.as_ref()) => done,
                _ = &mut *stop, if !stopped => {
                    stopped = true;
                    continue;
                }
            };
            let Some(done) = done else {
                break;
            };
            if let Done::Written {
                volume,
                restored,
                result,
                at,
            } = done
            {
                match self.finish_write(volume, restored, result, at) {
                    Ok(true) => written += 1,
                    Ok(false) => {}
                    Err(message) => {
                        failed.get_or_insert(RefresherError::Write {
                            volume: self.volumes[volume].volume.plan.name.clone(),
                            message,
                        });
                    }
                }
            }
        }
        match failed {
            Some(err) => Err(err),
            None => Ok((!stopped).then_some(written)),
        }
    }
}
