//! Whether an incoming InstallSnapshot stream may be written at all.
//!
//! A snapshot is large and goes to disk as it arrives, so a stream is
//! judged on its first chunk, before its temporary file exists: the header
//! must be well formed and come from another node to this one, in a term
//! no older than ours (a stale leader's snapshot would be refused by the
//! core after the whole transfer anyway), announcing a size under the
//! configured ceiling and under the free space of the snapshot directory
//! minus a reserve. Only one stream is received at a time: a second one is
//! refused at once instead of doubling the disk it may fill.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resqlite_proto::raft as pb;
use tokio::sync::watch;
use tonic::Status;

use super::convert;
use super::free_space::available_bytes;
use super::TransportOptions;
use crate::core::Status as CoreStatus;
use crate::types::NodeId;

/// The limits an incoming snapshot is held to (see [`TransportOptions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotLimits {
    /// Largest snapshot accepted, in bytes.
    pub(crate) max_bytes: u64,
    /// Free bytes a snapshot must leave on its file system.
    pub(crate) disk_reserve: u64,
    /// Longest wait for the next chunk.
    pub(crate) idle_timeout: Duration,
}

impl From<&TransportOptions> for SnapshotLimits {
    fn from(o: &TransportOptions) -> Self {
        SnapshotLimits {
            max_bytes: o.snapshot_max_bytes,
            disk_reserve: o.snapshot_disk_reserve,
            idle_timeout: o.snapshot_idle_timeout,
        }
    }
}

/// Decides on the first chunk of each incoming snapshot stream of one node.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotAdmission {
    me: NodeId,
    limits: SnapshotLimits,
    /// The core's status as the event loop publishes it. `None` for a
    /// service built without a driver (tests): the term check is then left
    /// to the core, which refuses a stale snapshot once it is received.
    status: Option<watch::Receiver<CoreStatus>>,
    /// A stream is being received.
    busy: Arc<AtomicBool>,
}

/// An admitted stream. The receiving slot is free again once it is
/// dropped, however the stream ends.
#[derive(Debug)]
pub(crate) struct Admitted {
    busy: Arc<AtomicBool>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
    }
}

impl SnapshotAdmission {
    /// Admission for node `me`, without a view of its term.
    pub(crate) fn new(me: NodeId, limits: SnapshotLimits) -> Self {
        SnapshotAdmission {
            me,
            limits,
            status: None,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Refuses snapshots from terms older than the one `status` reports.
    pub(crate) fn with_term(mut self, status: watch::Receiver<CoreStatus>) -> Self {
        self.status = Some(status);
        self
    }

    /// How long a stream may go without a chunk.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.limits.idle_timeout
    }

    /// Checks the first chunk of a stream whose file would go to `dir`.
    /// On success the stream holds the receiving slot until the returned
    /// value is dropped.
    pub(crate) async fn admit(
        &self,
        head: &pb::InstallSnapshotChunk,
        dir: &Path,
    ) -> Result<Admitted, Status> {
        convert::check_snapshot_header(head)
            .map_err(|e| Status::invalid_argument(format!("malformed snapshot stream: {e}")))?;
        if head.from == self.me || head.from == 0 {
            return Err(Status::invalid_argument(format!(
                "snapshot stream claims to come from node {}, which cannot send this node one",
                head.from
            )));
        }
        if head.to != self.me {
            return Err(Status::invalid_argument(format!(
                "snapshot stream for node {} reached node {}",
                head.to, self.me
            )));
        }
        if let Some(status) = &self.status {
            let term = status.borrow().term;
            if head.term < term {
                return Err(Status::failed_precondition(format!(
                    "snapshot from term {} refused: this node is at term {term}, \
                     so the sender is no longer its leader",
                    head.term
                )));
            }
        }
        let size = head.total_size;
        if size > self.limits.max_bytes {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {size} bytes refused: over this node's limit of {} bytes \
                 (TransportOptions::snapshot_max_bytes)",
                self.limits.max_bytes
            )));
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(Status::resource_exhausted(
                "another snapshot is being received by this node; retry once it is done",
            ));
        }
        let admitted = Admitted {
            busy: self.busy.clone(),
        };
        // Checked while holding the slot: no other stream can be writing.
        self.check_free_space(size, dir).await?;
        Ok(admitted)
    }

    async fn check_free_space(&self, size: u64, dir: &Path) -> Result<(), Status> {
        let path: PathBuf = dir.to_path_buf();
        let free = tokio::task::spawn_blocking(move || available_bytes(&path))
            .await
            .map_err(|e| Status::internal(format!("free space task: {e}")))?
            .map_err(|e| {
                Status::internal(format!(
                    "cannot read the free space of {}: {e}",
                    dir.display()
                ))
            })?;
        let reserve = self.limits.disk_reserve;
        if size > free.saturating_sub(reserve) {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {size} bytes refused: {free} bytes free in {}, \
                 of which {reserve} are kept in reserve",
                dir.display()
            )));
        }
        Ok(())
    }
}
