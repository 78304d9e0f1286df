//! Blocking work off the async threads. Store writes are redb commits that
//! sync to disk; on a runtime thread a slow disk would stall every receiver
//! and timer on it. Callers await the result, so each stage keeps its own
//! order while the blocking pool does the waiting.

/// Runs `work` on the blocking pool and waits for it. `None` if it
/// panicked, which is logged as "`what` failed".
pub(crate) async fn off_runtime<T: Send + 'static>(what: &'static str, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Some(done),
        Err(error) => {
            tracing::error!(%error, "{what} failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_result_and_survives_a_panic() {
        assert_eq!(off_runtime("adding", || 2 + 2).await, Some(4));
        let panicked: Option<()> = off_runtime("panicking", || panic!("disk on fire")).await;
        assert_eq!(panicked, None);
    }
}
