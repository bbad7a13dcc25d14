//! An append-only, checksummed log of Arrow batches, fsynced per append.
//! Frames are `[len u32][crc32 u32][Arrow IPC stream bytes]`; a torn tail frame is dropped on replay.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

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
    /// complete batch it already holds, in append order.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<RecordBatch>)> {
        let mut batches = Vec::new();
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
                    batches.push(batch?);
                }
                valid_len += 8 + len as u64;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
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

    /// Appends one batch and waits until it is on disk.
    pub(crate) fn append(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut body = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut body, &batch.schema())?;
            w.write(batch)?;
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
        self.file.write_all(&frame)?;
        self.file.sync_data()?;
        Ok(())
    }
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
