// WeChat's mini-program runtime cannot run here (it exists only inside the
// WeChat app and WeChat DevTools, neither of which runs on this machine),
// so the mini-program's OWN files — app.js, config.js, lectern.js and its
// pages' JS, unchanged — run under Node with this small stand-in for the
// parts of the runtime they use: `App`, `Page`, `getApp`, CommonJS
// `require` between its files, page `setData`, navigation, and `wx.*`.
// `wx.request` performs REAL HTTP (fetch) to a real Lectern; `wx.login`
// asks the WeChat stand-in for a fresh code, as the WeChat app asks
// WeChat's servers. Any other `wx` API the code calls fails the test, so
// the stand-in cannot silently hide what the real runtime would do.
// What this cannot show: WXML rendering, the web-view component itself,
// WeChat's domain allow-lists (业务域名 / request 合法域名) — see
// apps/miniprogram/README.md.
import { readFileSync } from "node:fs";
import path from "node:path";

export const miniprogramDir = path.resolve(import.meta.dirname, "../miniprogram");

interface PageInstance {
  route: string;
  data: Record<string, unknown>;
  setData: (patch: Record<string, unknown>, callback?: () => void) => void;
  [key: string]: unknown;
}

export interface RuntimeOptions {
  /** Replaces config.js's values (as an organisation edits the file). */
  config: Record<string, string>;
  /** What `wx.getAccountInfoSync().miniProgram.appId` answers. */
  appid: string;
  /** The WeChat stand-in, and who is on the phone. */
  wechat: string;
  who: string;
}

type Callbacks<T> = { success?: (res: T) => void; fail?: (err: { errMsg: string }) => void; complete?: () => void };

export class MiniProgram {
  readonly calls: string[] = [];
  readonly stack: PageInstance[] = [];
  private app: Record<string, unknown> | null = null;
  private pageDefinition: Record<string, unknown> | null = null;
  private modules = new Map<string, { exports: unknown }>();
  private pages = new Map<string, Record<string, unknown>>();

  constructor(private readonly options: RuntimeOptions) {}

  /** app.js's `globalData`. */
  get globalData(): Record<string, unknown> {
    return ((this.app?.globalData as Record<string, unknown>) ?? {});
  }

  /** A module of the mini-program, as its own `require` loads it. */
  require(file: string): unknown {
    return this.load(file);
  }

  /** The page on top, as the runtime shows it. */
  get page(): PageInstance {
    const page = this.stack.at(-1);
    if (!page) throw new Error("no page is open");
    return page;
  }

  /** Launches like WeChat: app.js's `App`, `onLaunch`, then the first page of app.json. */
  launch(): void {
    const manifest = JSON.parse(readFileSync(path.join(miniprogramDir, "app.json"), "utf8")) as { pages: string[] };
    this.load("app.js");
    const app = this.app;
    if (!app) throw new Error("app.js did not call App()");
    (app.onLaunch as ((o: unknown) => void) | undefined)?.call(app, { path: manifest.pages[0], query: {}, scene: 1001 });
    this.open(`/${manifest.pages[0]}`, false);
  }

  /** Resolves once `check` holds for the page on top, or fails after `ms`. */
  async until(check: (page: PageInstance) => boolean, ms = 20_000): Promise<PageInstance> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const page = this.stack.at(-1);
      if (page && check(page)) return page;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`the mini-program did not get there; on ${this.stack.at(-1)?.route}: ${JSON.stringify(this.stack.at(-1)?.data)}; calls: ${this.calls.join(", ")}`);
  }

  private open(url: string, keep: boolean): void {
    const [route, search] = url.replace(/^\//, "").split("?");
    const query = Object.fromEntries(new URLSearchParams(search ?? ""));
    // A page's file runs once; each visit is a new instance of what it registered.
    if (!this.pages.has(route!)) {
      this.pageDefinition = null;
      this.load(`${route}.js`);
      if (this.pageDefinition) this.pages.set(route!, this.pageDefinition);
    }
    const definition = this.pages.get(route!);
    if (!definition) throw new Error(`${route}.js did not call Page()`);
    const page: PageInstance = {
      ...definition,
      route: route!,
      data: structuredClone((definition.data as Record<string, unknown>) ?? {}),
      setData(patch, callback) {
        Object.assign(this.data, patch);
        callback?.();
      },
    };
    if (!keep) this.stack.length = 0;
    this.stack.push(page);
    (page.onLoad as ((q: unknown) => void) | undefined)?.call(page, query);
    (page.onShow as (() => void) | undefined)?.call(page);
    (page.onReady as (() => void) | undefined)?.call(page);
  }

  /** CommonJS as the mini-program runtime does it: paths relative to the file, `.js` optional. */
  private load(file: string): unknown {
    const full = path.resolve(miniprogramDir, file.endsWith(".js") ? file : `${file}.js`);
    const cached = this.modules.get(full);
    if (cached) return cached.exports;
    const module = { exports: {} as unknown };
    this.modules.set(full, module);
    const source = readFileSync(full, "utf8");
    const requireHere = (spec: string) => this.load(path.relative(miniprogramDir, path.resolve(path.dirname(full), spec)));
    const run = new Function("require", "module", "exports", "App", "Page", "getApp", "wx", source);
    run(
      requireHere,
      module,
      module.exports,
      (definition: Record<string, unknown>) => (this.app = definition),
      (definition: Record<string, unknown>) => (this.pageDefinition = definition),
      () => this.app,
      this.wx(),
    );
    if (path.basename(full) === "config.js") Object.assign(module.exports as object, this.options.config);
    return module.exports;
  }

  private wx(): unknown {
    const runtime = this;
    const done = <T>(cb: Callbacks<T>, result: { ok: true; value: T } | { ok: false; errMsg: string }) => {
      if (result.ok) cb.success?.(result.value);
      else cb.fail?.({ errMsg: result.errMsg });
      cb.complete?.();
    };
    const api: Record<string, unknown> = {
      getAccountInfoSync: () => ({ miniProgram: { appId: runtime.options.appid, envVersion: "develop", version: "" } }),
      login(cb: Callbacks<{ code: string; errMsg: string }>) {
        const url = `${runtime.options.wechat}/standin/wx-login?appid=${runtime.options.appid}&who=${encodeURIComponent(runtime.options.who)}`;
        fetch(url)
          .then((r) => r.json() as Promise<{ code: string }>)
          .then(
            ({ code }) => done(cb, { ok: true, value: { code, errMsg: "login:ok" } }),
            (e: Error) => done(cb, { ok: false, errMsg: `login:fail ${e.message}` }),
          );
      },
      request(options: Callbacks<{ statusCode: number; data: unknown; header: Record<string, string> }> & { url: string; method?: string; header?: Record<string, string>; data?: unknown }) {
        runtime.calls.push(`${options.method ?? "GET"} ${new URL(options.url).pathname}`);
        const hasBody = options.data !== undefined && (options.method ?? "GET") !== "GET";
        fetch(options.url, { method: options.method ?? "GET", headers: options.header, body: hasBody ? JSON.stringify(options.data) : undefined })
          .then(async (r) => {
            const text = await r.text();
            let data: unknown = text;
            try {
              data = JSON.parse(text);
            } catch {
              // Not JSON: wx.request hands the text over.
            }
            done(options, { ok: true, value: { statusCode: r.status, data, header: Object.fromEntries(r.headers) } });
          })
          .catch((e: Error) => done(options, { ok: false, errMsg: `request:fail ${e.message}` }));
      },
      redirectTo: ({ url }: { url: string }) => runtime.open(url, false),
      reLaunch: ({ url }: { url: string }) => runtime.open(url, false),
      navigateTo: ({ url }: { url: string }) => runtime.open(url, true),
    };
    return new Proxy(api, {
      get(target, name: string) {
        if (name in target) {
          runtime.calls.push(`wx.${name}`);
          return target[name];
        }
        throw new Error(`the mini-program called wx.${name}, which this stand-in does not provide: add it, as WeChat documents it`);
      },
    });
  }
}
