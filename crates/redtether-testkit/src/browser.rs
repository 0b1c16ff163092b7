//! A real browser for the tests of the hub's pages: Debian's headless Chromium driven over
//! WebDriver (Debian's `chromium-driver`, i.e. chromedriver) with the `fantoccini` client. Both
//! packages are installed with apt-get when missing (as root, serialised across test processes
//! with a file lock), like the other system programs the tests use.
//!
//! Each [`Browser`] is one chromedriver on a free loopback port with one headless Chromium behind
//! it, in a profile folder of its own, kept off every network but loopback. Dropping it kills
//! chromedriver and every Chromium process it started: chromedriver runs in a process group of
//! its own, and every process of the tree carries an environment marker naming the test process
//! that owns it, by which a later [`Browser::start`] also kills what a test process killed with
//! SIGKILL (a timeout) left behind.
//!
//! The methods panic with the page's address when something is not there, as the rest of the
//! test kit does: a failing step is a failing test. Finding an element waits for it (up to
//! [`WAIT`]); a click that loads a page is [`Browser::click_and_load`], which waits for that
//! page, so that the next step does not act on the old one.

use fantoccini::Locator;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The environment variable that marks a browser's processes: `<owner pid>.<chromedriver port>`.
const MARKER: &str = "REDTETHER_TEST_BROWSER";
/// How long a step waits for an element, a page or an address.
pub const WAIT: Duration = Duration::from_secs(10);

/// One headless Chromium with its chromedriver, killed with all its processes when dropped.
pub struct Browser {
    client: fantoccini::Client,
    chromedriver: Child,
    marker: String,
    /// The profile and chromedriver's log; removed after the processes are gone.
    dir: tempfile::TempDir,
}

/// A cookie as the browser keeps it (for the current page's site).
#[derive(Debug, Clone)]
pub struct Cookie {
    pub value: String,
    pub http_only: bool,
    /// `Strict`, `Lax` or `None` as the browser reports it.
    pub same_site: Option<String>,
}

impl Browser {
    /// Installs Chromium and chromedriver if needed, then starts them.
    pub async fn start() -> Browser {
        install();
        kill_orphans();
        // A free port is picked by binding and releasing it; should another process take it in
        // between, chromedriver exits at once and another port is tried.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(browser) = Browser::start_on(port).await {
                return browser;
            }
        }
        panic!("chromedriver did not start on any of 5 free ports");
    }

    async fn start_on(port: u16) -> Option<Browser> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let marker = format!("{}.{port}", std::process::id());
        let mut chromedriver = Command::new(CHROMEDRIVER)
            // Without `--allowed-ips`, which would make it listen on every interface: by
            // default it listens on loopback only.
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .env(MARKER, &marker)
            // The kill on drop takes the whole group: chromedriver, Chromium and its helpers.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs");
        let deadline = Instant::now() + WAIT;
        loop {
            if chromedriver.try_wait().unwrap().is_some() {
                return None;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                kill_tree(&mut chromedriver, &marker);
                panic!("chromedriver did not listen on 127.0.0.1:{port} within {WAIT:?}; its log: {}", read(&log));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let profile = dir.path().join("profile");
        let args = [
            "--headless".to_string(),
            // Chromium will not start as root with its sandbox (nor where a container has no
            // user namespaces for it); what it loads here is the tests' own pages.
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            // Docker-sized /dev/shm would crash renderers.
            "--disable-dev-shm-usage".to_string(),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".to_string(),
            "--no-default-browser-check".to_string(),
            // Loopback only: no proxy from the environment, no name resolution but for
            // `localhost` (the rules take addresses for names too, hence 127.0.0.1), no
            // updates, no background traffic to Google.
            "--no-proxy-server".to_string(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-extensions".to_string(),
            "--window-size=1024,768".to_string(),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
        let connected = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match connected {
            Ok(client) => Some(Browser { client, chromedriver, marker, dir }),
            Err(e) => {
                kill_tree(&mut chromedriver, &marker);
                panic!("chromedriver did not start Chromium: {e}; its log: {}", read(&log));
            }
        }
    }

    /// Opens the hub's page `next` (a path under `api`), which sends a browser without a
    /// session to the login form, logs in there with `name`, `password` and the TOTP `code`,
    /// and waits to be back at `next`.
    pub async fn log_in(&self, api: &str, name: &str, password: &str, code: &str, next: &str) {
        self.goto(&format!("{api}{next}")).await;
        let login = self.current_url().await;
        assert_eq!(login.path(), "/login", "the console sends a browser without a session to log in");
        self.fill("input[name=name]", name).await;
        self.fill("input[name=password]", password).await;
        self.click_and_load("button").await;
        self.fill("input[name=code]", code).await;
        self.click_and_load("button").await;
        let path = next.split('?').next().unwrap_or(next);
        self.wait_for_url(next, |u| u.path() == path).await;
    }

    /// Loads `url` and waits for the page (its `load` event).
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
    }

    /// The address of the page shown now.
    pub async fn current_url(&self) -> reqwest::Url {
        self.client.current_url().await.unwrap_or_else(|e| panic!("no current address: {e}"))
    }

    /// Waits until the address of the page shown satisfies `check` (a page that moves on by
    /// itself, e.g. with a `Refresh` header); returns it.
    pub async fn wait_for_url(&self, what: &str, check: impl Fn(&reqwest::Url) -> bool) -> reqwest::Url {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.current_url().await;
            if check(&url) {
                return url;
            }
            if Instant::now() >= deadline {
                panic!("the browser is still at {url} after {WAIT:?}, not at {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the field `selector` (a CSS selector), after clearing it.
    pub async fn fill(&self, selector: &str, text: &str) {
        let field = self.find(selector).await;
        field.clear().await.unwrap_or_else(|e| panic!("cannot clear {selector}: {e}"));
        field.send_keys(text).await.unwrap_or_else(|e| panic!("cannot type into {selector}: {e}"));
    }

    /// Clicks the element `selector`, without waiting for anything it starts.
    pub async fn click(&self, selector: &str) {
        self.find(selector).await.click().await.unwrap_or_else(|e| panic!("cannot click {selector}: {e}"));
    }

    /// Clicks `selector` — a form's button, a link — and waits until the page this loads has
    /// loaded. A click only starts a form's submission, and the old page's elements (its
    /// labels, its inputs) would otherwise answer the next step: the old page is marked, and
    /// the wait is over when the page shown is complete and unmarked.
    pub async fn click_and_load(&self, selector: &str) {
        self.execute("window.__redtether_old_page = true", &[]).await;
        self.click(selector).await;
        let deadline = Instant::now() + WAIT;
        loop {
            // Fails while the new page has no document yet: not loaded either.
            let state = self
                .client
                .execute("return window.__redtether_old_page !== true && document.readyState === 'complete'", vec![])
                .await;
            if matches!(state, Ok(Value::Bool(true))) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("no new page loaded within {WAIT:?} of clicking {selector} at {}", self.current_url().await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The rendered text of the first element `selector`.
    pub async fn text(&self, selector: &str) -> String {
        self.find(selector).await.text().await.unwrap_or_else(|e| panic!("no text of {selector}: {e}"))
    }

    /// The rendered texts of every element `selector` (none when there is none: no waiting).
    pub async fn texts(&self, selector: &str) -> Vec<String> {
        let found = self.client.find_all(Locator::Css(selector)).await.unwrap_or_default();
        let mut texts = Vec::with_capacity(found.len());
        for element in found {
            texts.push(element.text().await.unwrap_or_else(|e| panic!("no text of {selector}: {e}")));
        }
        texts
    }

    /// The DOM property `name` (e.g. `value`) of the first element `selector`.
    pub async fn property(&self, selector: &str, name: &str) -> Option<String> {
        self.find(selector).await.prop(name).await.unwrap_or_else(|e| panic!("no {name} of {selector}: {e}"))
    }

    /// Runs `script` (a function body: `return …`; `arguments[i]` is `args[i]`) in the page and
    /// returns what it returned, e.g. `execute("return window.__pwned === true", &[])` to see
    /// whether a script someone slipped into the page ran.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Value {
        match self.client.execute(script, args.to_vec()).await {
            Ok(value) => value,
            Err(e) => panic!("script failed at {}: {e}", self.current_url().await),
        }
    }

    /// Saves a PNG of the window as `target/console/<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("no screenshot: {e}"));
        let dir = Path::new(env!("REDTETHER_TARGET_TMPDIR")).parent().expect("target/tmp is in target").join("console");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The cookie `name` of the current page's site, as the browser keeps it (HttpOnly ones too).
    pub async fn cookie(&self, name: &str) -> Option<Cookie> {
        let all = self.client.get_all_cookies().await.unwrap_or_else(|e| panic!("no cookies: {e}"));
        all.into_iter().find(|c| c.name() == name).map(|c| Cookie {
            value: c.value().to_string(),
            http_only: c.http_only().unwrap_or(false),
            same_site: c.same_site().map(|s| s.to_string()),
        })
    }

    /// Forgets the cookies of the current page's site (a logged-out browser, without a new one).
    pub async fn delete_cookies(&self) {
        self.client.delete_all_cookies().await.unwrap_or_else(|e| panic!("cannot delete cookies: {e}"));
    }

    /// From now on this tab ignores pages' Content-Security-Policy (Chromium's
    /// `Page.setBypassCSP`), so that a test of a page's escaping sees what the escaping alone
    /// does — the CSP would otherwise stop most injected scripts by itself.
    pub async fn bypass_csp(&self) {
        self.client
            .issue_cmd(ChromeDevTools { cmd: "Page.setBypassCSP", params: json!({ "enabled": true }) })
            .await
            .unwrap_or_else(|e| panic!("Page.setBypassCSP refused: {e}"));
    }

    /// The first element `selector`, waiting for it.
    async fn find(&self, selector: &str) -> fantoccini::elements::Element {
        match self.client.wait().at_most(WAIT).for_element(Locator::Css(selector)).await {
            Ok(element) => element,
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                let source = self.client.source().await.unwrap_or_default();
                panic!("no {selector} at {url} after {WAIT:?} ({e}); the page: {source}")
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_tree(&mut self.chromedriver, &self.marker);
        if std::thread::panicking() {
            eprintln!("---- chromedriver log ----\n{}", tail(&read(&self.dir.path().join("chromedriver.log")), 8000));
        }
    }
}

/// A Chrome DevTools command through chromedriver's `goog/cdp/execute` endpoint.
#[derive(Debug)]
struct ChromeDevTools {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for ChromeDevTools {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "cmd": self.cmd, "params": self.params }).to_string()))
    }
}

/// Kills chromedriver's process group and every process carrying the marker (a Chromium helper
/// that left the group), then waits until none is left.
fn kill_tree(chromedriver: &mut Child, marker: &str) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let _ = killpg(Pid::from_raw(chromedriver.id() as i32), Signal::SIGKILL);
    let _ = chromedriver.wait();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = crate::pids_with_env(MARKER, marker);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            // Not a panic while one unwinds already (from a drop): that would abort the tests.
            if std::thread::panicking() {
                eprintln!("browser processes {left:?} outlived SIGKILL for {WAIT:?}");
                return;
            }
            panic!("browser processes {left:?} outlived SIGKILL for {WAIT:?}");
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the browsers of test processes that are gone (killed before they could drop theirs).
fn kill_orphans() {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let prefix = format!("{MARKER}=");
        let owner = environ
            .split(|&b| b == 0)
            .find_map(|e| e.strip_prefix(prefix.as_bytes()))
            .and_then(|value| std::str::from_utf8(value).ok()?.split('.').next()?.parse::<u32>().ok());
        if let Some(owner) = owner
            && !crate::process_alive(owner)
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Installs Chromium and chromedriver if either is missing, with Liberation fonts, so that
/// screenshots show text on a machine that has no font yet.
fn install() {
    crate::apt::ensure(&crate::apt::Need {
        lock: "chromium.lock",
        programs: &[CHROMIUM, CHROMEDRIVER],
        packages: &["chromium", "chromium-driver", "fonts-liberation"],
        unwanted_service: None,
        for_what: "the browser tests",
    });
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
