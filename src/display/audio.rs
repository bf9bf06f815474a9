//! A session's sound: what the browser plays reaches a FIFO (PulseAudio's pipe sink inside
//! the sandbox, `browser::init`); one reader per session cuts it into 20 ms packets, drops
//! silence (a quiet page costs nothing) and sends the rest to every viewer as G.711 µ-law
//! (8 bits a sample: 384 kbit/s for stereo at 24 kHz, only while something plays).

use std::path::Path;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

/// Samples a second, per channel (what the sandbox's sink writes).
pub const RATE: u32 = crate::browser::init::AUDIO_RATE;
/// Channels, interleaved.
pub const CHANNELS: usize = 2;
/// One packet: 20 ms of s16le stereo.
const PACKET: usize = (RATE as usize / 50) * CHANNELS * 2;
/// Below this peak a packet is silence.
const SILENT: i16 = 24;
/// Packets read ahead of real time at most (half a second): the FIFO is the browser's, and
/// a writer faster than real time is made to wait rather than cost the daemon a core and
/// every viewer its bandwidth.
const BURST: f64 = 25.0;

/// The sound of one session.
pub struct Sound {
    packets: broadcast::Sender<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Sound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sound")
    }
}

impl Drop for Sound {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sound {
    /// Starts reading `fifo`.
    ///
    /// # Errors
    /// The FIFO cannot be opened.
    pub fn start(fifo: &Path) -> std::io::Result<Sound> {
        // The FIFO's directory is the browser's: never follow a symlink it put there (to a
        // key file, say, which would then be "played" to viewers), and take a FIFO only.
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(fifo)?;
        if !f.metadata()?.file_type().is_fifo() {
            return Err(std::io::Error::other("the sound FIFO is not a FIFO"));
        }
        let mut rx = tokio::net::unix::pipe::Receiver::from_file(f)?;
        let (packets, _) = broadcast::channel(50);
        let tx = packets.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; PACKET];
            let (mut budget, mut at) = (BURST, tokio::time::Instant::now());
            loop {
                // Real time: 50 packets a second.
                let now = tokio::time::Instant::now();
                budget = (budget + now.duration_since(at).as_secs_f64() * 50.0).min(BURST);
                at = now;
                if budget < 1.0 {
                    tokio::time::sleep(std::time::Duration::from_secs_f64((1.0 - budget) / 50.0))
                        .await;
                    continue;
                }
                budget -= 1.0;
                // A writer that is not there yet (or went away) reads as end of file.
                match rx.read_exact(&mut buf).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(_) => return,
                }
                if let Some(m) = packet(&buf) {
                    let c = &super::COUNTERS;
                    c.audio_packets.fetch_add(1, Ordering::Relaxed);
                    c.audio_bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
                    let _ = tx.send(m);
                }
            }
        });
        Ok(Sound { packets, task })
    }

    /// The packets from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.packets.subscribe()
    }
}

/// The viewer message for 20 ms of s16le stereo: `0x02`, then one µ-law byte a sample;
/// `None` for silence.
pub fn packet(pcm: &[u8]) -> Option<Bytes> {
    let samples = pcm
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]));
    if samples
        .clone()
        .all(|s| s.unsigned_abs() < SILENT.unsigned_abs())
    {
        return None;
    }
    let mut m = Vec::with_capacity(1 + pcm.len() / 2);
    m.push(2);
    m.extend(samples.map(mulaw));
    Some(m.into())
}

/// G.711 µ-law of one sample.
pub fn mulaw(s: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let sign = if s < 0 { 0x80 } else { 0 };
    let mut x = i32::from(s).abs().min(CLIP) + BIAS;
    let mut exp = 7;
    let mut mask = 0x4000;
    while exp > 0 && x & mask == 0 {
        exp -= 1;
        mask >>= 1;
    }
    x = (x >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) as u8 | x as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoder the live-view page uses.
    fn decode(u: u8) -> i32 {
        let u = !u;
        let t = ((i32::from(u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
        if u & 0x80 != 0 {
            0x84 - t
        } else {
            t - 0x84
        }
    }

    #[tokio::test]
    async fn a_planted_symlink_or_file_is_not_read_as_sound() {
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("master.key");
        std::fs::write(&secret, [7u8; 32]).unwrap();
        let planted = t.path().join("pcm");
        std::os::unix::fs::symlink(&secret, &planted).unwrap();
        assert!(Sound::start(&planted).is_err());
        assert!(
            Sound::start(&secret).is_err(),
            "a regular file is not a FIFO"
        );
    }

    #[tokio::test]
    async fn a_writer_faster_than_real_time_is_held_to_it() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("pcm");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        #[allow(unsafe_code)]
        let made = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(made, 0);
        let sound = Sound::start(&fifo).unwrap();
        let mut rx = sound.subscribe();
        // 200 loud packets (4 s of sound) written as fast as the pipe takes them.
        let f2 = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new().write(true).open(f2).unwrap();
            let loud: Vec<u8> = (0..PACKET / 2)
                .flat_map(|i| (if i % 2 == 0 { 8000i16 } else { -8000 }).to_le_bytes())
                .collect();
            for _ in 0..200 {
                if w.write_all(&loud).is_err() {
                    return;
                }
            }
        });
        let mut got = 0u64;
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(Ok(_)) => got += 1,
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => got += n,
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        // Half a second ahead, then 50 a second: at most about 75 in the first second (fewer
        // on a busy machine), not 200.
        assert!((1..=90).contains(&got), "{got} packets in one second");
    }

    #[test]
    fn mulaw_round_trips_within_its_step_and_silence_is_dropped() {
        for s in [
            0i16,
            1,
            -1,
            100,
            -100,
            1000,
            -1000,
            12345,
            -12345,
            i16::MAX,
            i16::MIN,
        ] {
            let back = decode(mulaw(s));
            let err = (back - i32::from(s)).abs();
            assert!(err <= (i32::from(s).abs() / 16).max(8) + 1, "{s} -> {back}");
        }
        assert!(packet(&vec![0u8; PACKET]).is_none());
        let mut loud = vec![0u8; PACKET];
        loud[..2].copy_from_slice(&5000i16.to_le_bytes());
        let p = packet(&loud).unwrap();
        assert_eq!((p[0], p.len()), (2, 1 + PACKET / 2));
    }
}
