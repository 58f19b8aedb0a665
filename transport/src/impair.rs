//! **Lab only.** A seeded impairment stage on the node's outgoing datagrams, for the link
//! lab (`tests/linklab/`), whose kernel has no netem: every datagram this socket sends is
//! held back `delay_ms` and a seeded fraction `loss` of them is dropped.
//!
//! It is off unless the environment variable `MESHTV_LAB_IMPAIR` is set, read once per
//! process:
//!
//! ```text
//! MESHTV_LAB_IMPAIR="delay_ms=20,loss=0.01,seed=7"
//! ```
//!
//! Delay on both ends of a path makes its round trip (20 ms each way: 40 ms). The stage
//! sits under QUIC (direct datagrams and relay frames; STUN and punches pass untouched),
//! so it is the network as the protocol sees it; it never runs in production, where the
//! variable is not set.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The variable that turns the stage on.
pub(crate) const ENV: &str = "MESHTV_LAB_IMPAIR";
/// Datagrams held back at once; beyond this, dropped.
const QUEUE_MAX: usize = 8192;
/// A delayed datagram the socket could not take for this long after it fell due (the
/// link behind it is full) is dropped, as a full router buffer would: the stage must not
/// hide a slow link behind a queue of its own.
const STALE_AFTER: Duration = Duration::from_millis(100);

/// What the stage does to outgoing datagrams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ImpairConfig {
    pub(crate) delay: Duration,
    /// Fraction of datagrams dropped, 0..=1.
    pub(crate) loss: f64,
    pub(crate) seed: u64,
}

impl ImpairConfig {
    /// Parses `delay_ms=20,loss=0.01,seed=7` (every key optional, none other allowed).
    pub(crate) fn parse(s: &str) -> Result<ImpairConfig, String> {
        let mut c = ImpairConfig { delay: Duration::ZERO, loss: 0.0, seed: 0 };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("'{part}' is not key=value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{key}: {e}");
            match key.trim() {
                "delay_ms" => c.delay = Duration::from_millis(value.trim().parse().map_err(|e| bad(&e))?),
                "loss" => {
                    c.loss = value.trim().parse().map_err(|e| bad(&e))?;
                    if !(0.0..=1.0).contains(&c.loss) {
                        return Err(format!("loss {} is not within 0..=1", c.loss));
                    }
                }
                "seed" => c.seed = value.trim().parse().map_err(|e| bad(&e))?,
                other => return Err(format!("unknown key '{other}' (delay_ms, loss, seed)")),
            }
        }
        Ok(c)
    }

    /// The stage as the environment asks for it (read once per process); `None` when the
    /// variable is unset. A malformed value is a lab mistake: it panics rather than run
    /// unimpaired.
    pub(crate) fn from_env() -> Option<ImpairConfig> {
        static CONFIG: OnceLock<Option<ImpairConfig>> = OnceLock::new();
        *CONFIG.get_or_init(|| {
            let value = std::env::var(ENV).ok()?;
            let c = ImpairConfig::parse(&value).unwrap_or_else(|e| panic!("{ENV}={value}: {e}"));
            tracing::warn!(
                delay_ms = c.delay.as_millis() as u64,
                loss = c.loss,
                seed = c.seed,
                "{ENV}: lab impairment of outgoing datagrams is on"
            );
            Some(c)
        })
    }
}

/// splitmix64: small, seeded, good enough to pick which datagrams to drop.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The stage on one socket.
pub(crate) struct Impair {
    config: ImpairConfig,
    rng: Mutex<Rng>,
    /// Delayed datagrams, to the task that sends them when due (`None` without delay).
    delayed: Option<mpsc::Sender<(Instant, SocketAddr, Vec<u8>)>>,
}

impl Impair {
    /// The stage for a socket (must run inside tokio when there is a delay).
    pub(crate) fn new(config: ImpairConfig, io: Arc<tokio::net::UdpSocket>) -> Impair {
        let delayed = (!config.delay.is_zero()).then(|| {
            let (tx, mut rx) = mpsc::channel::<(Instant, SocketAddr, Vec<u8>)>(QUEUE_MAX);
            // One delay for all: datagrams fall due in the order they were sent.
            tokio::spawn(async move {
                while let Some((due, to, datagram)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    if Instant::now() <= due + STALE_AFTER {
                        let _ = io.send_to(&datagram, to).await;
                    }
                }
            });
            tx
        });
        Impair { config, rng: Mutex::new(Rng(config.seed)), delayed }
    }

    /// Whether the next datagram is lost.
    fn lost(&self) -> bool {
        self.config.loss > 0.0 && self.rng.lock().unwrap_or_else(|e| e.into_inner()).next_f64() < self.config.loss
    }

    /// Sends `datagram` to `to` through the stage: dropped, delayed or sent now.
    pub(crate) fn send(&self, io: &tokio::net::UdpSocket, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        if self.lost() {
            return Ok(());
        }
        match &self.delayed {
            None => io.try_send_to(datagram, to).map(|_| ()),
            Some(tx) => {
                // A full queue drops the datagram, as a full buffer would.
                let _ = tx.try_send((Instant::now() + self.config.delay, to, datagram.to_vec()));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lab_variable() {
        let c = ImpairConfig::parse("delay_ms=20,loss=0.01,seed=7").unwrap();
        assert_eq!(c, ImpairConfig { delay: Duration::from_millis(20), loss: 0.01, seed: 7 });
        assert_eq!(ImpairConfig::parse("").unwrap().loss, 0.0);
        assert_eq!(ImpairConfig::parse(" loss = 0.5 ").unwrap().loss, 0.5);
        for bad in ["loss=2", "loss=-0.1", "delay_ms=x", "jitter=3", "loss"] {
            assert!(ImpairConfig::parse(bad).is_err(), "{bad}");
        }
    }

    fn drops(config: ImpairConfig, n: usize) -> Vec<bool> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        let io = Arc::new(rt.block_on(tokio::net::UdpSocket::bind("127.0.0.1:0")).unwrap());
        let stage = Impair::new(config, io);
        (0..n).map(|_| stage.lost()).collect()
    }

    #[test]
    fn loss_is_seeded_and_near_its_rate() {
        let c = ImpairConfig { delay: Duration::ZERO, loss: 0.01, seed: 3 };
        let a = drops(c, 100_000);
        assert_eq!(a, drops(c, 100_000), "same seed, same drops");
        assert_ne!(a, drops(ImpairConfig { seed: 4, ..c }, 100_000), "another seed, other drops");
        let lost = a.iter().filter(|&&d| d).count();
        assert!((800..1200).contains(&lost), "{lost} of 100000 lost at 1%");
        assert!(drops(ImpairConfig { loss: 0.0, ..c }, 1000).iter().all(|&d| !d));
        assert!(drops(ImpairConfig { loss: 1.0, ..c }, 1000).iter().all(|&d| d));
    }

    #[tokio::test]
    async fn datagrams_are_delayed_in_order() {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let to = rx.local_addr().unwrap();
        let stage = Impair::new(ImpairConfig { delay: Duration::from_millis(50), loss: 0.0, seed: 1 }, tx.clone());
        let sent = std::time::Instant::now();
        for i in 0..5u8 {
            stage.send(&tx, &[0x40, i], to).unwrap();
        }
        let mut buf = [0u8; 8];
        for i in 0..5u8 {
            let n = rx.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[0x40, i]);
        }
        assert!(sent.elapsed() >= Duration::from_millis(50), "arrived after {:?}", sent.elapsed());
    }

    #[tokio::test]
    async fn without_delay_datagrams_go_at_once() {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let stage = Impair::new(ImpairConfig { delay: Duration::ZERO, loss: 0.0, seed: 1 }, tx.clone());
        // A try-send, as quinn's: it needs the socket's readiness known.
        tx.writable().await.unwrap();
        stage.send(&tx, b"\x40now", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"\x40now");
    }
}
