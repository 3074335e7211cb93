// Drives headless Chromium (the system's, through playwright-core) for
// tests/tests/chat_page_browser.rs: one JSON command per line on stdin, one JSON answer
// per line on stdout, so the Rust test decides every step and can stop and start servers
// between them.
//
//   node browser-driver.js /usr/bin/chromium
//   -> {"ready":true}
//   <- {"id":1,"op":"open","page":"alice","url":"http://127.0.0.1:5000/"}
//   -> {"id":1,"ok":true,"value":null}
//
// Pages are named; each has its own browser context (no shared storage). Controls are
// found the way a user finds them: by their label or their role and name.
"use strict";

const readline = require("node:readline");
const { chromium } = require("playwright-core");

const executablePath = process.argv[2];
const VIEWPORT = { width: 640, height: 800 };

/** Named pages, and what each reported on its console as an error. */
const pages = new Map();

function page(name) {
  const entry = pages.get(name);
  if (!entry) {
    throw new Error(`no page named ${JSON.stringify(name)}`);
  }
  return entry;
}

/** The text of every line in the page's message log. */
function lines(name) {
  return page(name).page.$$eval("#messages li", (items) => items.map((li) => li.textContent));
}

/** Waits until `predicate(argument)` holds in the page; on timeout, says what the log had. */
async function waitIn(name, predicate, argument, timeout, what) {
  try {
    await page(name).page.waitForFunction(predicate, argument, { timeout });
  } catch (error) {
    const seen = await lines(name).catch(() => []);
    const state = await page(name)
      .page.$eval("#status", (status) => status.dataset.state)
      .catch(() => "?");
    throw new Error(
      `${name}: ${what} did not happen within ${timeout} ms (state ${state}); its log:\n` +
        seen.join("\n"),
    );
  }
}

const operations = {
  async open(browser, { page: name, url }) {
    const context = await browser.newContext({ viewport: VIEWPORT });
    const tab = await context.newPage();
    const entry = { context, page: tab, errors: [] };
    tab.on("console", (message) => {
      if (message.type() === "error") {
        const where = message.location().url;
        entry.errors.push(where ? `${message.text()} (${where})` : message.text());
      }
    });
    tab.on("pageerror", (error) => entry.errors.push(`uncaught: ${error.message}`));
    pages.set(name, entry);
    await tab.goto(url);
    return null;
  },

  async fill(_, { page: name, label, value }) {
    await page(name).page.getByLabel(label, { exact: true }).fill(value);
    return null;
  },

  async press(_, { page: name, label, key }) {
    await page(name).page.getByLabel(label, { exact: true }).press(key);
    return null;
  },

  async select(_, { page: name, label, value }) {
    await page(name).page.getByLabel(label, { exact: true }).selectOption(value);
    return null;
  },

  async click(_, { page: name, role, label }) {
    await page(name).page.getByRole(role, { name: label, exact: true }).click();
    return null;
  },

  async waitForLine(_, { page: name, text, timeout }) {
    await waitIn(
      name,
      (wanted) =>
        [...document.querySelectorAll("#messages li")].some((li) => li.textContent === wanted),
      text,
      timeout,
      `the line ${JSON.stringify(text)}`,
    );
    return null;
  },

  async waitForState(_, { page: name, state, timeout }) {
    await waitIn(
      name,
      (wanted) => document.getElementById("status").dataset.state === wanted,
      state,
      timeout,
      `the state ${JSON.stringify(state)}`,
    );
    return page(name).page.$eval("#status", (status) => status.textContent);
  },

  lines(_, { page: name }) {
    return lines(name);
  },

  errors(_, { page: name }) {
    return page(name).errors;
  },

  /** One image of the named pages side by side, for a person to look at. */
  async screenshot(browser, { pages: names, path }) {
    const shots = [];
    for (const name of names) {
      shots.push((await page(name).page.screenshot()).toString("base64"));
    }
    const context = await browser.newContext({
      viewport: { width: VIEWPORT.width * names.length + 8 * (names.length - 1), height: VIEWPORT.height },
    });
    const sheet = await context.newPage();
    const images = shots
      .map((shot) => `<img src="data:image/png;base64,${shot}" style="display:block">`)
      .join("");
    await sheet.setContent(
      `<body style="margin:0;display:flex;gap:8px;background:#888">${images}</body>`,
    );
    await sheet.screenshot({ path });
    await context.close();
    return null;
  },
};

async function main() {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    // Tests run as root in containers, where Chromium's sandbox cannot start.
    args: ["--no-sandbox"],
  });
  console.log(JSON.stringify({ ready: true }));
  const input = readline.createInterface({ input: process.stdin });
  for await (const line of input) {
    if (!line.trim()) {
      continue;
    }
    const command = JSON.parse(line);
    let answer;
    try {
      const operation = operations[command.op];
      if (!operation) {
        throw new Error(`unknown operation ${JSON.stringify(command.op)}`);
      }
      answer = { id: command.id, ok: true, value: (await operation(browser, command)) ?? null };
    } catch (error) {
      answer = { id: command.id, ok: false, error: String(error.message || error) };
    }
    console.log(JSON.stringify(answer));
  }
  await browser.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
