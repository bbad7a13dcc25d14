//! An append-only, checksummed log of Arrow batches, fsynced per append.
//! Frames are `[len u32][crc32 u32][Arrow IPC stream bytes]`; a torn tail frame is dropped on replay.
//! Each frame is numbered (its log sequence number, in the batch's schema metadata; logs
//! written before numbering count from 1), so a log can drop the frames a checkpoint holds.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;

use crate::{EngineError, Result};

/// A write-ahead log file of record batches.
pub(crate) struct Wal {
    path: PathBuf,
    file: File,
}

impl Wal {
    /// Opens (creating if missing) the log at `path` and returns it with every
    /// complete batch it already holds and its number, in append order.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<(u64, RecordBatch)>)> {
        let mut batches: Vec<(u64, RecordBatch)> = Vec::new();
        let mut valid_len = 0u64;
        if path.exists() {
            let mut reader = BufReader::new(File::open(path)?);
            loop {
                let mut header = [0u8; 8];
                if read_full(&mut reader, &mut header)? < 8 {
                    break;
                }
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                let mut body = vec![0u8; len];
                if read_full(&mut reader, &mut body)? < len || crc32fast::hash(&body) != crc {
                    break; // torn or partial tail: the statement never returned
                }
                for batch in StreamReader::try_new(body.as_slice(), None)? {
                    let batch = batch?;
                    let lsn = match batch.schema().metadata().get(LSN_KEY) {
                        Some(v) => v.parse().map_err(|_| EngineError::CorruptLog {
                            path: path.display().to_string(),
                            reason: format!("frame number {v}"),
                        })?,
                        None => batches.last().map_or(1, |(l, _)| l + 1),
                    };
                    batches.push((lsn, strip_lsn(batch)?));
                }
                valid_len += 8 + len as u64;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(PRIVATE)
            .open(path)?;
        if file.metadata()?.len() != valid_len {
            file.set_len(valid_len)?;
            file.sync_all()?;
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
            },
            batches,
        ))
    }

    /// Appends batch number `lsn` and waits until it is on disk.
    pub(crate) fn append(&mut self, lsn: u64, batch: &RecordBatch) -> Result<()> {
        let frame = self.frame(lsn, batch)?;
        self.file.write_all(&frame)?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Drops the frames numbered `upto` and below: the log is rewritten beside itself and
    /// renamed into place, so a crash leaves the old log or the new one.
    pub(crate) fn truncate_through(&mut self, upto: u64) -> Result<()> {
        let (_, frames) = Self::open(&self.path)?;
        if frames.first().is_none_or(|(lsn, _)| *lsn > upto) {
            return Ok(());
        }
        let tmp = self.path.with_extension("wal.tmp");
        {
            let mut out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(PRIVATE)
                .open(&tmp)?;
            for (lsn, batch) in frames.iter().filter(|(lsn, _)| *lsn > upto) {
                out.write_all(&self.frame(*lsn, batch)?)?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&self.path)?;
        Ok(())
    }

    fn frame(&self, lsn: u64, batch: &RecordBatch) -> Result<Vec<u8>> {
        let mut metadata = batch.schema().metadata().clone();
        metadata.insert(LSN_KEY.to_string(), lsn.to_string());
        let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
        let batch = RecordBatch::try_new(schema, batch.columns().to_vec())?;
        let mut body = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut body, &batch.schema())?;
            w.write(&batch)?;
            w.finish()?;
        }
        let len = u32::try_from(body.len()).map_err(|_| EngineError::CorruptLog {
            path: self.path.display().to_string(),
            reason: "frame over 4 GiB".into(),
        })?;
        let mut frame = Vec::with_capacity(body.len() + 8);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        Ok(frame)
    }
}

/// Logs are readable by the server's user only: they hold the tables' rows.
const PRIVATE: u32 = 0o600;

/// The schema metadata key of a frame's number.
const LSN_KEY: &str = "weir.lsn";

/// The batch without its frame number (as it was appended).
fn strip_lsn(batch: RecordBatch) -> Result<RecordBatch> {
    let mut metadata = batch.schema().metadata().clone();
    if metadata.remove(LSN_KEY).is_none() {
        return Ok(batch);
    }
    let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
    Ok(RecordBatch::try_new(schema, batch.columns().to_vec())?)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
