#!/usr/bin/env python3
"""The built book in a real browser (headless Chromium driven by Selenium).

Run it after building the book, from the repository root:

    mdbook build book && python3 book/check_in_browser.py      # or: just book-check

(`python3 book/check_in_browser.py DIR` checks a book built into DIR instead of book/book/.)

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: apt-get install chromium
chromium-driver) and Selenium (python3 -m pip install selenium); .ci/run installs them.

It serves book/book/ over http on 127.0.0.1 (a free port, in this process), opens every .html
page at a 1280x900 window with the sidebar open, and prints one line per problem:
  - a code block (`pre`, or the `code` inside it) whose content is wider than its box
    (a horizontal scroll bar);
  - an image (`img`, inline `svg`) that did not load or renders 0x0;
  - an in-book link to a page that does not exist, or a #fragment with no such id there
    (external links are not checked);
  - a JavaScript error in the console (level SEVERE; favicon 404s ignored);
  - mdBook's search (driven through its UI) finding nothing for a few words the book is about.
Exit 0 if there is none, 1 if there are problems, 2 if the check itself could not start. It
takes about 15 s; it gives up after 300 s. The browser and the server are stopped in every case
(also on SIGINT/SIGTERM), and it fails if a Chromium process it started is still there after.
"""

import functools
import http.server
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse

# The built book: book/book/ beside this script, or the directory given as the one argument.
BOOK = os.path.abspath(
    sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "book")
)
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WIDTH, HEIGHT = 1280, 900
SEARCHES = ["EADDRINUSE", "SO_PEERCRED", "abstract"]
PAGE_DEADLINE = 20  # seconds for one page to load
SEARCH_DEADLINE = 15  # seconds for one search to show results
TOTAL_DEADLINE = 300  # seconds for the whole check; past it, it stops (cleaning up) and fails
# Not a page of the book: mdBook's table of contents for readers without JavaScript (the
# sidebar's iframe). Its links are the sidebar's, which are checked on every page.
SKIP = {"toc.html"}

# Runs in the page: what is wrong with it, and what it offers to links (ids, links).
PAGE_PROBE = r"""
const problems = [];
const describe = (el) => {
  const heading = (() => {
    let n = el;
    while (n) {
      let p = n.previousElementSibling;
      while (p) {
        if (/^H[1-6]$/.test(p.tagName)) return p.textContent.trim();
        p = p.previousElementSibling;
      }
      n = n.parentElement;
      if (n && n.tagName === 'MAIN') break;
    }
    return '(top of page)';
  })();
  return `under "${heading}"`;
};
const root = document.documentElement;
if (!root.classList.contains('sidebar-visible')) {
  problems.push('the sidebar is not open at a ' + window.innerWidth + '-px window');
}
const main = document.querySelector('main') || document.body;
const blocks = new Set();
for (const pre of main.querySelectorAll('pre')) {
  blocks.add(pre);
  for (const code of pre.querySelectorAll(':scope > code')) blocks.add(code);
}
let checkedBlocks = 0;
for (const el of blocks) {
  if (el.getClientRects().length === 0) continue;  // not rendered (e.g. a hidden <details>)
  checkedBlocks++;
  if (el.scrollWidth > el.clientWidth + 1) {
    const text = (el.textContent || '');
    const longest = text.split('\n').reduce((a, l) => (l.length > a.length ? l : a), '');
    const lang = (el.className.match(/language-([\w-]+)/) || [, 'no language'])[1];
    problems.push(`code block ${describe(el)} (${lang}) is ` +
      `${el.scrollWidth} px wide in a ${el.clientWidth}-px box; longest line ` +
      `(${longest.length} chars): ${JSON.stringify(longest.slice(0, 60))}`);
  }
}
for (const img of main.querySelectorAll('img')) {
  const r = img.getBoundingClientRect();
  // mdBook shows each image twice: inline, and a zoomed copy in .img-wrapper that is hidden
  // (display: none) until the image is clicked. The copy must load; only the inline one shows.
  const zoomCopy = img.closest('.img-wrapper') !== null;
  if (!img.complete || img.naturalWidth === 0) {
    problems.push(`image ${img.getAttribute('src')} ${describe(img)} did not load`);
  } else if (!zoomCopy && (r.width === 0 || r.height === 0)) {
    problems.push(`image ${img.getAttribute('src')} ${describe(img)} renders ` +
      `${r.width}x${r.height}`);
  }
}
for (const svg of main.querySelectorAll('svg')) {
  if (svg.parentElement && svg.parentElement.closest('svg')) continue;
  if (svg.closest('.buttons, .fa-svg, button')) continue;  // mdBook's own icons
  const r = svg.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) {
    problems.push(`inline svg ${describe(svg)} renders ${r.width}x${r.height}`);
  }
}
const ids = Array.from(document.querySelectorAll('[id]'), (e) => e.id);
const names = Array.from(document.querySelectorAll('a[name]'), (e) => e.getAttribute('name'));
const links = Array.from(document.querySelectorAll('a[href]'), (a) => {
  const where = a.closest('#mdbook-sidebar') ? 'sidebar' : (a.closest('main') ? 'page' : 'chrome');
  return [a.getAttribute('href'), a.href, where, (a.textContent || '').trim().slice(0, 40)];
});
return {problems, ids: ids.concat(names), links, checkedBlocks,
        width: window.innerWidth, column: Math.round(main.getBoundingClientRect().width)};
"""


def fail_setup(message):
    print(f"check_in_browser: {message}", file=sys.stderr)
    sys.exit(2)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def chromium_pids_under(pid):
    """Every process whose ancestry reaches pid (chromedriver's children: Chromium)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        children = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found |= children
        frontier = children
    return found


def pids_using(profile):
    """Processes whose command line names our private profile directory (Chromium's)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if profile.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


class Stop(Exception):
    """SIGTERM, SIGINT or the overall deadline: unwind through the cleanup, then fail."""


def stop(signum, _frame):
    if signum == signal.SIGALRM:
        raise Stop(f"over the {TOTAL_DEADLINE}-s deadline")
    raise Stop(f"stopped by signal {signal.Signals(signum).name}")


def main():
    started = time.monotonic()
    sys.stdout.reconfigure(line_buffering=True)  # in order with stderr in CI's log
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, stop)
    signal.alarm(TOTAL_DEADLINE)
    if not os.path.isfile(os.path.join(BOOK, "index.html")):
        fail_setup(f"no built book at {BOOK} (run `mdbook build book` first)")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            fail_setup(f"{path} is missing (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.common.exceptions import TimeoutException, WebDriverException
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        fail_setup("Selenium is missing (python3 -m pip install selenium)")

    pages = sorted(
        os.path.relpath(os.path.join(d, f), BOOK).replace(os.sep, "/")
        for d, _, files in os.walk(BOOK)
        for f in files
        if f.endswith(".html")
    )
    pages.sort(key=lambda p: p == "print.html")
    problems = []
    profile = tempfile.mkdtemp(prefix="uds-course-chromium-")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=BOOK)
    )
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    driver = None
    service = None
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=CHROMEDRIVER)
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(PAGE_DEADLINE)
        driver.set_script_timeout(PAGE_DEADLINE)
        driver.set_window_size(WIDTH, HEIGHT)

        ids = {}  # page -> set of ids
        links = []  # (from page, href as written, resolved url, where, text)
        blocks = 0
        reported = set()  # problems as the pages report them, without the page's name
        for page in pages:
            if page in SKIP:
                continue
            try:
                driver.get(base + page)
                WebDriverWait(driver, PAGE_DEADLINE).until(
                    lambda d: d.execute_script("return document.readyState") == "complete"
                )
                # Images decode asynchronously: give each one a bounded chance to finish.
                driver.execute_async_script(
                    """
                    const done = arguments[arguments.length - 1];
                    const imgs = Array.from(document.images);
                    Promise.race([
                      Promise.all(imgs.map((i) => i.decode().catch(() => null))),
                      new Promise((r) => setTimeout(r, 5000)),
                    ]).then(() => done(null));
                    """
                )
                result = driver.execute_script(PAGE_PROBE)
            except (TimeoutException, WebDriverException) as e:
                problems.append(f"{page}: could not be checked: {str(e).splitlines()[0]}")
                continue
            if page == "print.html":
                # Every chapter on one page, with the same column: report only what no
                # chapter page has reported already (a code block too wide there is here too).
                result["problems"] = [p for p in result["problems"] if p not in reported]
            reported.update(result["problems"])
            problems.extend(f"{page}: {p}" for p in result["problems"])
            ids[page] = set(result["ids"])
            blocks += result["checkedBlocks"]
            if page == "introduction.html":
                print(f"{WIDTH}x{HEIGHT} window: {result['width']}-px viewport, "
                      f"{result['column']}-px text column (sidebar open)")
            links.extend((page, *link) for link in result["links"])
            for entry in driver.get_log("browser"):
                if entry.get("level") != "SEVERE" or "favicon" in entry.get("message", ""):
                    continue
                problems.append(f"{page}: JavaScript console error: {entry['message']}")

        # Links: resolved against the page, inside the served book -> file and id must exist.
        seen = set()
        for page, href, url, where, text in links:
            if not url.startswith(base):
                continue  # external (http(s) elsewhere, mailto:, ...): not checked
            if page == "404.html" and href.startswith("#"):
                # mdBook's 404 page has <base href="/"> (it is served for any missing path), so
                # its own heading's "#id" link points at the front page: mdBook's, not ours.
                continue
            target, _, fragment = url[len(base) :].partition("#")
            target = urllib.parse.unquote(target.split("?")[0]) or "index.html"
            if target.endswith("/"):
                target += "index.html"
            key = (page, href, target, fragment)
            if key in seen:
                continue
            seen.add(key)
            label = f'{page}: {where} link "{text}" ({href})'
            if not os.path.isfile(os.path.join(BOOK, target)):
                problems.append(f"{label}: no page {target} in the book")
            elif fragment and target.endswith(".html"):
                known = ids.get(target)
                fragment = urllib.parse.unquote(fragment)
                if known is not None and target not in SKIP and fragment not in known:
                    problems.append(f"{label}: {target} has no element with id {fragment!r}")

        # Search, through the UI as a reader uses it.
        driver.get(base + "index.html")
        for word in SEARCHES:
            try:
                bar = driver.find_element(By.ID, "mdbook-searchbar")
                if not bar.is_displayed():
                    driver.find_element(By.TAG_NAME, "body").send_keys("s")
                    WebDriverWait(driver, SEARCH_DEADLINE).until(lambda d: bar.is_displayed())
                bar.clear()
                bar.send_keys(word)
                # The header names the term searched ("6 search results for 'EADDRINUSE':"),
                # so results left from the previous word do not count.
                header = driver.find_element(By.ID, "mdbook-searchresults-header")
                WebDriverWait(driver, SEARCH_DEADLINE).until(
                    lambda d: f"'{word}'" in header.text
                    and d.find_elements(By.CSS_SELECTOR, "#mdbook-searchresults > li")
                )
                found = len(driver.find_elements(By.CSS_SELECTOR, "#mdbook-searchresults > li"))
                print(f"search: {header.text.rstrip(':')} ({found} shown)")
            except TimeoutException:
                try:
                    said = driver.find_element(By.ID, "mdbook-searchresults-header").text
                except WebDriverException:
                    said = ""
                problems.append(
                    f"search: no results for {word!r} within {SEARCH_DEADLINE} s "
                    f"(index.html, typed into #mdbook-searchbar; it says: {said!r})"
                )
            except WebDriverException as e:
                problems.append(f"search {word!r}: could not run: {str(e).splitlines()[0]}")
        for entry in driver.get_log("browser"):
            if entry.get("level") == "SEVERE" and "favicon" not in entry.get("message", ""):
                problems.append(f"index.html (search): JavaScript console error: {entry['message']}")
        checked = len([p for p in pages if p not in SKIP])
        print(
            f"checked {checked} pages, {blocks} code blocks, {len(seen)} in-book links "
            f"at {WIDTH}x{HEIGHT} in {time.monotonic() - started:.0f} s"
        )
    except WebDriverException as e:
        problems.append(f"(check) the browser failed: {str(e).splitlines()[0]}")
    except Stop as e:
        problems.append(f"(check) {e}: the pages after it were not checked")
    finally:
        # The cleanup itself gets a fresh, short deadline, and no signal interrupts it.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        signal.alarm(60)
        driver_pid = None
        if service is not None and getattr(service, "process", None) is not None:
            driver_pid = service.process.pid
        leftovers = set()
        if driver is not None:
            if driver_pid:
                leftovers = chromium_pids_under(driver_pid)
            try:
                driver.quit()
            except Exception as e:  # quit must not hide the report: the kill below follows
                print(f"check_in_browser: driver.quit(): {e}", file=sys.stderr)
        elif service is not None:
            service.stop()
        server.shutdown()
        server.server_close()
        # Chromium exits a moment after quit: wait for it (bounded), then kill what remains.
        deadline = time.monotonic() + 10
        remaining = set(pids_using(profile)) | {p for p in leftovers if os.path.exists(f"/proc/{p}")}
        while remaining and time.monotonic() < deadline:
            time.sleep(0.2)
            remaining = {p for p in remaining if alive(p)}
        if remaining:
            problems.append(f"(check) Chromium processes left after quit, killed: {sorted(remaining)}")
            for pid in remaining:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        shutil.rmtree(profile, ignore_errors=True)
        signal.alarm(0)

    for p in problems:
        print(f"book in browser: {p}", file=sys.stderr)
    if problems:
        print(f"book in browser: {len(problems)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print("book in browser: no problems")


def alive(pid):
    """A process that exists and is not a zombie (a reaped-later child counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    main()
