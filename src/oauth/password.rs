//! Password hashing for `[[oauth.users]]`: argon2id PHC strings made by
//! `mssql-mcp hash-password`, verified in constant time by the argon2 crate.
//!
//! Each check holds 19 MiB while it runs, so checks go through one [`Gate`]: a few at a time
//! (twice the CPUs), and a sign-in that finds no free slot within a few seconds is told to
//! try again rather than queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngExt;
use tokio::sync::Semaphore;

/// Hashes a password with argon2id (19 MiB, 2 passes: the OWASP baseline).
pub fn hash(password: &str) -> Result<String, String> {
    let salt_bytes: [u8; 16] = rand::rng().random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| e.to_string())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash of a random password nobody knows, with the parameters of `like` (the costliest
/// configured hash; OWASP's 19 MiB and 2 passes without one), made once per set of
/// parameters: verified against when the username is unknown, so an unknown name takes as
/// long as a wrong password of the costliest user (of every user, when all hashes have the
/// same cost, as `hash-password` makes them).
fn dummy_hash(like: Option<&str>) -> Option<String> {
    type Dummies = std::sync::Mutex<std::collections::HashMap<(u32, u32, u32), Option<String>>>;
    static DUMMIES: std::sync::OnceLock<Dummies> = std::sync::OnceLock::new();
    let (m, t, p) = like
        .and_then(|phc| PasswordHash::new(phc).ok())
        .and_then(|parsed| Params::try_from(&parsed).ok())
        .map_or((19 * 1024, 2, 1), |p| (p.m_cost(), p.t_cost(), p.p_cost()));
    let mut dummies = DUMMIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    dummies
        .entry((m, t, p))
        .or_insert_with(|| {
            let secret: [u8; 16] = rand::rng().random();
            let salt_bytes: [u8; 16] = rand::rng().random();
            let salt = SaltString::encode_b64(&salt_bytes).ok()?;
            let params = Params::new(m, t, p, None).ok()?;
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(super::hex(&secret).as_bytes(), &salt)
                .map(|h| h.to_string())
                .ok()
        })
        .clone()
}

/// The costliest of `hashes` to check (memory times passes), the one an unknown name's
/// dummy check copies ([`verify`]).
pub fn costliest<'a>(hashes: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    hashes
        .filter_map(|phc| {
            let parsed = PasswordHash::new(phc).ok()?;
            let p = Params::try_from(&parsed).ok()?;
            Some((u64::from(p.m_cost()) * u64::from(p.t_cost()), phc))
        })
        .max_by_key(|(cost, _)| *cost)
        .map(|(_, phc)| phc)
}

/// Most memory one check may take, in KiB (64 MiB). `hash-password` uses 19 MiB (OWASP's
/// first choice); a hash made elsewhere with far more would hold that much per sign-in, times
/// the checks the [`Gate`] lets run at once.
const MAX_MEMORY_KIB: u32 = 64 * 1024;
/// Most passes and lanes a configured hash may ask for.
const MAX_PASSES: u32 = 16;
const MAX_LANES: u32 = 16;

/// Whether `phc` is an argon2id hash the server can check, at a bounded cost: what the config
/// check asks of `oauth.users[].password_hash`. A hash that does not parse would fail every
/// sign-in without saying why.
pub fn check_hash(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("is not a PHC hash string ({e})"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "is an {} hash, not argon2id",
            parsed.algorithm.as_str()
        ));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("has no salt or no hash value".into());
    }
    let params = argon2::Params::try_from(&parsed)
        .map_err(|e| format!("has parameters argon2 refuses ({e})"))?;
    if params.m_cost() > MAX_MEMORY_KIB
        || params.t_cost() > MAX_PASSES
        || params.p_cost() > MAX_LANES
    {
        return Err(format!(
            "asks for m={} KiB, t={}, p={}: more than {MAX_MEMORY_KIB} KiB, {MAX_PASSES} passes \
             or {MAX_LANES} lanes per sign-in",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(())
}

/// Whether `password` matches `phc` (an argon2id PHC string). `None` (an unknown name)
/// checks against a dummy hash with the parameters of `like` and always fails, taking as
/// long as a wrong password for the user whose hash `like` is.
pub fn verify(password: &str, phc: Option<&str>, like: Option<&str>) -> bool {
    let known = phc.is_some();
    let dummy;
    let phc: &str = match phc {
        Some(p) => p,
        None => match dummy_hash(like) {
            Some(d) => {
                dummy = d;
                &dummy
            }
            None => return false,
        },
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && known
}

/// Bounds how many password checks run at once (each takes 19 MiB and a CPU for tens of
/// milliseconds; without a bound, parallel wrong sign-ins grow memory without limit).
pub struct Gate {
    slots: Arc<Semaphore>,
    permits: usize,
    /// How long a check waits for a slot before the sign-in is answered "busy".
    wait: Duration,
    /// Checks running now, and the most seen at once (for tests and metrics).
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Default for Gate {
    /// Twice the available CPUs at once, waiting up to 3 seconds for a slot.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Gate::new(2 * cpus, Duration::from_secs(3))
    }
}

impl Gate {
    pub fn new(permits: usize, wait: Duration) -> Self {
        let permits = permits.max(1);
        Gate {
            slots: Arc::new(Semaphore::new(permits)),
            permits,
            wait,
            running: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Checks `password` against `phc` (see [`verify`]) once a slot is free. `None` when no
    /// slot freed within the wait: the server is busy and nothing was checked.
    pub async fn verify(
        &self,
        password: String,
        phc: Option<String>,
        like: Option<String>,
    ) -> Option<bool> {
        self.run(move || verify(&password, phc.as_deref(), like.as_deref()))
            .await
            .map(|r| r.unwrap_or(false))
    }

    /// Runs `f` on the blocking pool once a slot is free, `None` if none freed within the
    /// wait. The slot is held by the blocking task itself, so a caller that goes away (the
    /// browser closed the connection) does not free it before the work ends.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<Result<T, tokio::task::JoinError>> {
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let (running, peak) = (self.running.clone(), self.peak.clone());
        Some(
            tokio::task::spawn_blocking(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let out = f();
                running.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
                out
            })
            .await,
        )
    }

    /// How many checks may run at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// The most checks that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_runs_no_more_than_its_permits_at_once_and_turns_away_who_waits_too_long() {
        let gate = Arc::new(Gate::new(3, Duration::from_secs(10)));
        let work = || std::thread::sleep(Duration::from_millis(20));
        let all = futures::future::join_all((0..24).map(|_| {
            let g = gate.clone();
            async move { g.run(work).await.map(|r| r.is_ok()) }
        }))
        .await;
        assert!(all.iter().all(|r| *r == Some(true)), "{all:?}");
        assert!((2..=3).contains(&gate.peak()), "{}", gate.peak());

        // With every slot taken for longer than the wait, the next caller is turned away.
        let gate = Arc::new(Gate::new(1, Duration::from_millis(50)));
        let g = gate.clone();
        let busy = tokio::spawn(async move {
            g.run(|| std::thread::sleep(Duration::from_millis(500)))
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(gate.run(|| ()).await.is_none());
        assert!(matches!(busy.await, Ok(Some(Ok(())))));
        assert!(gate.run(|| ()).await.is_some());
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(&h), None));
        assert!(!verify("correct horsf", Some(&h), None));
    }

    #[test]
    fn an_unknown_user_never_verifies() {
        assert!(dummy_hash(None).is_some_and(|h| PasswordHash::new(&h).is_ok()));
        assert!(!verify("", None, None));
        assert!(!verify("anything", None, None));
    }

    /// The dummy check of an unknown name copies the parameters of the costliest configured
    /// hash, so a name's existence does not show in how long a wrong password takes.
    #[test]
    fn an_unknown_name_is_checked_as_costly_as_the_costliest_user() {
        let make = |m: u32, t: u32| {
            let params = Params::new(m, t, 1, None).expect("params");
            let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .expect("hash")
                .to_string()
        };
        let cheap = make(19 * 1024, 2);
        let dear = make(24 * 1024, 3);
        let configured = [cheap.as_str(), dear.as_str()];
        let like = costliest(configured.iter().copied());
        assert_eq!(like, Some(dear.as_str()));
        let dummy = dummy_hash(like).expect("dummy");
        let parsed = PasswordHash::new(&dummy).expect("parses");
        let p = Params::try_from(&parsed).expect("params");
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (24 * 1024, 3, 1));
        assert_ne!(dummy, dear, "a hash of another password");
        assert!(
            !verify("pw", None, like),
            "never verifies, even with that user's password"
        );
    }
}
