//! Record: writes every accepted export request to a file as OTLP/JSON, one
//! `ExportTraceServiceRequest` per line, the format of the OpenTelemetry
//! Collector's file exporter, so that two runs of a load test (base and
//! head of a pull request) can be compared with `driftwatch compare`.
//!
//! Receivers never wait for the disk: requests go through a queue bounded
//! in bytes to one writer thread that owns the file. A request that finds
//! the queue full is left out of the recording, counted, and logged, since
//! a recording with holes must say so. On shutdown the writer finishes the
//! queue and flushes before the process exits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use prost::Message;

use crate::telemetry::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
#[error("cannot open the recording {path} (record.path): {source}")]
pub struct RecordError {
    path: PathBuf,
    source: std::io::Error,
}

/// The receivers' side: hands requests to the writer.
pub(crate) struct Recorder {
    queue: std::sync::mpsc::SyncSender<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    warned: AtomicBool,
    metrics: Arc<Metrics>,
}

/// The writer thread, joined at shutdown once every [`Recorder`] is gone.
pub(crate) struct Writer {
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Waits until the queue is written and the file flushed. Blocking.
    pub(crate) fn finish(self) {
        let _ = self.thread.join();
    }
}

/// Opens (appending to) `path` and starts the writer.
pub(crate) fn start(path: &Path, max_queue_bytes: usize, metrics: Arc<Metrics>) -> Result<(Recorder, Writer), RecordError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| RecordError {
            path: path.to_path_buf(),
            source,
        })?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(4096);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let writer_bytes = queued_bytes.clone();
    let writer_metrics = metrics.clone();
    let path = path.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("driftwatch-record".into())
        .spawn(move || write_all(rx, file, &path, &writer_bytes, &writer_metrics))
        .map_err(|source| RecordError {
            path: PathBuf::from("(writer thread)"),
            source,
        })?;
    Ok((
        Recorder {
            queue: tx,
            queued_bytes,
            max_bytes: max_queue_bytes.max(1),
            warned: AtomicBool::new(false),
            metrics,
        },
        Writer { thread },
    ))
}

impl Recorder {
    /// Queues an accepted request for the recording; never waits.
    pub(crate) fn record(&self, body: &Bytes) {
        let n = body.len();
        let admitted = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= self.max_bytes).then_some(q + n)
            })
            .is_ok();
        if admitted && self.queue.try_send(body.clone()).is_ok() {
            return;
        }
        if admitted {
            self.queued_bytes.fetch_sub(n, Ordering::AcqRel);
        }
        self.metrics.receive.recorded.with_label_values(&["dropped"]).inc();
        if !self.warned.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "the recording falls behind: requests are left out of it (driftwatch_record_requests_total{{outcome=\"dropped\"}})"
            );
        }
    }
}

fn write_all(
    rx: std::sync::mpsc::Receiver<Bytes>,
    file: std::fs::File,
    path: &Path,
    queued_bytes: &AtomicUsize,
    metrics: &Metrics,
) {
    use crate::receive::otlp::ExportTraceServiceRequest;
    let mut out = std::io::BufWriter::new(file);
    let mut failing = false;
    while let Ok(body) = rx.recv() {
        queued_bytes.fetch_sub(body.len(), Ordering::AcqRel);
        let written = ExportTraceServiceRequest::decode(body.as_ref())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            .and_then(|request| serde_json::to_writer(&mut out, &request).map_err(std::io::Error::from))
            .and_then(|()| out.write_all(b"\n"));
        match written {
            Ok(()) => {
                metrics.receive.recorded.with_label_values(&["written"]).inc();
                failing = false;
            }
            Err(error) => {
                metrics.receive.recorded.with_label_values(&["failed"]).inc();
                if !failing {
                    tracing::error!(path = %path.display(), %error, "cannot write to the recording");
                }
                failing = true;
            }
        }
        // Flush whenever the queue runs dry: a recording is complete up to
        // the last quiet moment, whatever happens next.
        if queued_bytes.load(Ordering::Acquire) == 0
            && let Err(error) = out.flush()
        {
            tracing::error!(path = %path.display(), %error, "cannot flush the recording");
        }
    }
    if let Err(error) = out.flush() {
        tracing::error!(path = %path.display(), %error, "cannot flush the recording");
    }
}
