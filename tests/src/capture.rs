//! Process-wide log capture, so tests can scan everything keyturn logged for
//! secrets. Installed once; every test of the process writes into the same
//! buffer, which only makes the leak scan stricter.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static BUF: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INIT: OnceLock<()> = OnceLock::new();

struct Sink;

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        BUF.lock().unwrap().extend_from_slice(b);
        if std::env::var_os("KEYTURN_TEST_LOG").is_some() {
            std::io::stderr().write_all(b)?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the capturing subscriber (idempotent). Debug level for keyturn,
/// so the scan covers more than production would log.
pub fn install() {
    INIT.get_or_init(|| {
        // EMF lines belong to the binary's stdout (asserted in tests/tests/cli.rs), not to test output.
        keyturn::metrics::disable();
        let filter = tracing_subscriber::EnvFilter::new("keyturn=debug,keyturn_testkit=debug,warn");
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(|| Sink).try_init();
    });
}

/// Everything logged so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&BUF.lock().unwrap()).into_owned()
}
