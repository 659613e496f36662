//! InstallSnapshot as a client stream of chunks.
//!
//! The sender streams the current snapshot file in order, every chunk
//! carrying the snapshot's metadata, the last one the CRC-32 of the whole
//! file. The receiver first has the stream admitted on its first chunk
//! (`snapshot_admission`: nothing is written for a stream refused there),
//! then writes the chunks to a temporary file, checks order, size and
//! checksum, and publishes the file (fsync, rename, fsync of the
//! directory) before the core hears of the snapshot. A stream that goes
//! quiet for the idle timeout is dropped; the temporary file of a stream
//! that ends in any way but published is removed. Both sides log progress
//! (bytes / total) every tenth of the way.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use resqlite_proto::raft as pb;
use resqlite_proto::raft::raft_client::RaftClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::snapshot_admission::SnapshotAdmission;
use super::tls::SenderCheck;
use crate::core::{Message, MessageBody};
use crate::driver::snapshot_dir::{Current as SnapshotSource, SnapshotDir};
use crate::types::{Membership, NodeId, SnapshotMeta};

/// Bytes of snapshot per chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the network.
const READ_AHEAD: usize = 4;

/// Logs transfer progress each time another tenth is done.
struct Progress {
    total: u64,
    next_tenth: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            next_tenth: 1,
        }
    }

    /// Whether `done` bytes crossed the next tenth (or finished).
    fn crossed(&mut self, done: u64) -> bool {
        // An empty file is done at once.
        let tenth = (done * 10).checked_div(self.total).unwrap_or(10);
        if tenth >= self.next_tenth {
            self.next_tenth = tenth + 1;
            true
        } else {
            false
        }
    }
}

/// Streams the snapshot `requested` (or a newer one: the current file) to
/// `to`, and returns the follower's answer as a message for the core.
pub(crate) async fn send(
    mut client: RaftClient<Channel>,
    request: &Message,
    requested: &SnapshotMeta,
    source: &SnapshotSource,
) -> Result<Message, String> {
    let (meta, path) = source
        .lock()
        .ok()
        .and_then(|c| c.clone())
        .filter(|(m, _)| m.index >= requested.index)
        .ok_or_else(|| {
            format!(
                "no snapshot file for {}/{} to send",
                requested.index, requested.term
            )
        })?;
    let (from, to, term) = (request.from, request.to, request.term);
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let header = pb::InstallSnapshotChunk {
        term,
        from,
        to,
        last_included_index: meta.index,
        last_included_term: meta.term,
        voters: meta.membership.voters().collect(),
        configuration: meta.membership.encode(),
        ..Default::default()
    };
    let reader = tokio::task::spawn_blocking(move || read_chunks(&path, header, tx));
    let reply = client.install_snapshot(ReceiverStream::new(rx)).await;
    // The reader stops by itself once the stream is gone.
    let read = reader.await.map_err(|e| format!("reader task: {e}"))?;
    let reply = reply.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    let total = read?;
    let reply = reply.into_inner();
    if !reply.accepted {
        return Err(format!("refused: {}", reply.error));
    }
    tracing::info!(
        node = from,
        peer = to,
        index = meta.index,
        bytes = total,
        "snapshot delivered"
    );
    Ok(Message {
        from: reply.from,
        to: reply.to,
        term: reply.term,
        rpc_id: 0,
        body: MessageBody::InstallSnapshotResponse { index: reply.index },
    })
}

/// Reads `path` into chunks on a blocking thread; returns its size.
fn read_chunks(
    path: &Path,
    header: pb::InstallSnapshotChunk,
    tx: mpsc::Sender<pb::InstallSnapshotChunk>,
) -> Result<u64, String> {
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let mut file = File::open(path).map_err(|e| fail("open", e))?;
    let total = file.metadata().map_err(|e| fail("stat", e))?.len();
    let mut crc = crc32fast::Hasher::new();
    let mut progress = Progress::new(total);
    let mut offset = 0u64;
    loop {
        let mut buf = vec![0; CHUNK_BYTES.min((total - offset) as usize)];
        file.read_exact(&mut buf).map_err(|e| fail("read", e))?;
        crc.update(&buf);
        let len = buf.len() as u64;
        let done = offset + len == total;
        let chunk = pb::InstallSnapshotChunk {
            offset,
            data: Bytes::from(buf),
            done,
            total_size: total,
            crc32: if done { crc.clone().finalize() } else { 0 },
            ..header.clone()
        };
        if tx.blocking_send(chunk).is_err() {
            return Err("the stream closed before the end".to_string());
        }
        offset += len;
        if progress.crossed(offset) {
            tracing::info!(
                node = header.from,
                peer = header.to,
                index = header.last_included_index,
                sent = offset,
                total,
                "sending snapshot"
            );
        }
        if done {
            return Ok(total);
        }
    }
}

/// A temporary file that is removed when dropped, unless it was published:
/// whether the stream failed, timed out, or its handler was dropped with
/// the connection, no partial snapshot is left to fill the disk.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("only taken when published")
    }

    /// The file was renamed into place: keep it.
    fn published(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // One unlink, not worth a blocking task; a file never created
        // (refused at its first chunk) is not there to remove.
        if let Some(path) = self.0.take() {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed a partial snapshot"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a partial snapshot")
                }
            }
        }
    }
}

/// The next chunk, or `deadline_exceeded` after `idle` without one.
async fn next_chunk(
    chunks: &mut Streaming<pb::InstallSnapshotChunk>,
    idle: Duration,
) -> Result<pb::InstallSnapshotChunk, Status> {
    match tokio::time::timeout(idle, chunks.message()).await {
        Ok(Ok(Some(chunk))) => Ok(chunk),
        Ok(Ok(None)) => Err(Status::invalid_argument(
            "snapshot stream: ended before the last chunk",
        )),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "snapshot stream: no chunk for {idle:?}; transfer dropped"
        ))),
    }
}

/// Receives a whole snapshot into `dir`, verifies it and publishes it, if
/// `admission` admits the stream on its first chunk. Returns the
/// InstallSnapshot message for the core.
pub(crate) async fn receive(
    me: NodeId,
    mut sender: SenderCheck,
    mut chunks: Streaming<pb::InstallSnapshotChunk>,
    dir: &SnapshotDir,
    admission: &SnapshotAdmission,
) -> Result<Message, Status> {
    let idle = admission.idle_timeout();
    let first = next_chunk(&mut chunks, idle).await?;
    // Before anything else, the sender must be who it claims to be: an
    // impostor may not even hold the receiving slot.
    if !sender.allows(first.from) {
        return Err(super::server::not_the_sender(first.from));
    }
    // Held until the file is published or removed.
    let _admitted = admission.admit(&first, dir.path()).await?;
    let tmp = TempFile(Some(dir.temp_path()));
    let (head, meta) = receive_into(me, first, &mut chunks, tmp.path(), idle).await?;
    let publish_dir = dir.clone();
    let published_meta = meta.clone();
    let path = tmp.path().to_path_buf();
    tokio::task::spawn_blocking(move || publish_dir.publish(&path, &published_meta))
        .await
        .map_err(|e| Status::internal(format!("publish task: {e}")))?
        .map_err(|e| Status::internal(format!("publishing the snapshot: {e}")))?;
    tmp.published();
    Ok(Message {
        from: head.from,
        to: head.to,
        term: head.term,
        rpc_id: 0,
        body: MessageBody::InstallSnapshot { snapshot: meta },
    })
}

/// Writes `first` and the chunks after it to `tmp`; returns the first
/// chunk's header and the snapshot's metadata once the whole file checks
/// out.
async fn receive_into(
    me: NodeId,
    first: pb::InstallSnapshotChunk,
    chunks: &mut Streaming<pb::InstallSnapshotChunk>,
    tmp: &Path,
    idle: Duration,
) -> Result<(pb::InstallSnapshotChunk, SnapshotMeta), Status> {
    let bad = |why: String| Status::invalid_argument(format!("snapshot stream: {why}"));
    let mut file: Option<File> = None;
    let mut head: Option<pb::InstallSnapshotChunk> = None;
    let mut crc = crc32fast::Hasher::new();
    let mut written = 0u64;
    let mut progress = Progress::new(0);
    let mut pending = Some(first);
    loop {
        let chunk = match pending.take() {
            Some(chunk) => chunk,
            None => next_chunk(chunks, idle).await?,
        };
        let first = head.get_or_insert_with(|| pb::InstallSnapshotChunk {
            data: Bytes::new(),
            ..chunk.clone()
        });
        if chunk.last_included_index != first.last_included_index
            || chunk.last_included_term != first.last_included_term
            || chunk.total_size != first.total_size
        {
            return Err(bad("chunks of different snapshots".to_string()));
        }
        if chunk.offset != written {
            return Err(bad(format!(
                "chunk at offset {} where {written} was expected",
                chunk.offset
            )));
        }
        if written == 0 {
            progress = Progress::new(chunk.total_size);
            let path = tmp.to_path_buf();
            file = Some(blocking(move || File::create(&path)).await?);
        }
        crc.update(&chunk.data);
        written += chunk.data.len() as u64;
        if written > first.total_size {
            return Err(bad(format!(
                "more than the {} bytes announced",
                first.total_size
            )));
        }
        let mut f = file.take().expect("created at the first chunk");
        let data = chunk.data.clone();
        file = Some(
            blocking(move || {
                f.write_all(&data)?;
                Ok(f)
            })
            .await?,
        );
        if progress.crossed(written) {
            tracing::info!(
                node = me,
                from = first.from,
                index = first.last_included_index,
                received = written,
                total = first.total_size,
                "receiving snapshot"
            );
        }
        if chunk.done {
            if written != first.total_size {
                return Err(bad(format!(
                    "{written} bytes received, {} announced",
                    first.total_size
                )));
            }
            let computed = crc.finalize();
            if computed != chunk.crc32 {
                return Err(Status::data_loss(format!(
                    "snapshot checksum mismatch (sent {:#010x}, computed {computed:#010x})",
                    chunk.crc32
                )));
            }
            // A sender of the first version names the voters only.
            let membership = if first.configuration.is_empty() {
                Membership::from_voters(&first.voters)
            } else {
                Membership::decode(&first.configuration)
                    .map_err(|why| bad(format!("snapshot membership: {why}")))?
            };
            let meta = SnapshotMeta {
                index: first.last_included_index,
                term: first.last_included_term,
                membership,
            };
            return Ok((first.clone(), meta));
        }
    }
}

/// Runs blocking file I/O off the tokio workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("snapshot I/O task: {e}")))?
        .map_err(|e| Status::internal(format!("writing the snapshot: {e}")))
}
