// The API docs page in a real browser: it renders the merged document, and its "Try it"
// console logs in (the token is then used by every call), adds a product as the admin and
// lists it. Usage: node docs.mjs <gateway url> <admin email> <admin password>
// Environment: SHOP_BROWSER_CHROMIUM, the Chromium executable.
import { chromium } from "playwright-core";

const [url, email, password] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.SHOP_BROWSER_CHROMIUM,
  args: ["--no-sandbox"],
});
const failures = [];
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // Chromium logs every 4xx as "Failed to load resource" (the favicon, the 404 asked for
    // below); answers are checked one by one instead.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      failures.push(`console error: ${message.text()}`);
    }
  });
  await page.goto(`${url}/api/docs`);
  await page.waitForSelector("details.op");
  const title = await page.textContent("#title");
  if (!title.startsWith("Shop API")) failures.push(`title: ${title}`);

  // Runs one operation through its "Try it" panel; returns the answer's status and text.
  async function tryIt(method, path, { params = {}, body } = {}) {
    const id = `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, "-")}`;
    const operation = page.locator(`[id="${id}"]`);
    if ((await operation.count()) !== 1) throw new Error(`no operation ${method} ${path} on the page`);
    await operation.locator("summary").click();
    for (const [name, value] of Object.entries(params)) {
      await operation.locator(`input[data-name="${name}"]`).fill(value);
    }
    if (body !== undefined) await operation.locator("textarea").fill(JSON.stringify(body));
    const answer = operation.locator("pre.answer");
    await answer.evaluate((node) => node.removeAttribute("data-status"));
    await operation.locator("button", { hasText: "Send" }).click();
    await operation.locator("pre.answer[data-status]").waitFor();
    return { status: Number(await answer.getAttribute("data-status")), text: await answer.textContent() };
  }

  const template = await page.locator('[id="op-post--api-products"] textarea').inputValue();
  for (const field of ["name", "price_cents", "currency", "category", "stock"]) {
    if (!template.includes(`"${field}"`)) failures.push(`the product body template lacks ${field}: ${template}`);
  }

  const login = await tryIt("post", "/api/auth/login", { body: { email, password } });
  if (login.status !== 200) failures.push(`login: ${login.status} ${login.text}`);
  const token = await page.inputValue("#token");
  if (token.split(".").length !== 3) failures.push(`the token field holds no JWT after login: ${token}`);

  const added = await tryIt("post", "/api/products", {
    body: { name: "Browser mug", description: "", price_cents: 990, currency: "EUR", category: "kitchen", stock: 4 },
  });
  if (added.status !== 201) failures.push(`add a product: ${added.status} ${added.text}`);

  const listed = await tryIt("get", "/api/products", { params: { category: "kitchen" } });
  if (listed.status !== 200 || !listed.text.includes("Browser mug")) {
    failures.push(`list products: ${listed.status} ${listed.text}`);
  }

  const missing = await tryIt("get", "/api/products/{id}", {
    params: { id: "00000000-0000-0000-0000-000000000000" },
  });
  if (missing.status !== 404 || !missing.text.includes("problems")) {
    failures.push(`an unknown product: ${missing.status} ${missing.text}`);
  }
} catch (error) {
  failures.push(String(error && error.stack ? error.stack : error));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("the docs page works");
