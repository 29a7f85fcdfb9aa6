// A LOCAL STAND-IN for WeChat, which no test can reach: its server API
// (`GET /sns/jscode2session`, answered as WeChat's documentation shows,
// errors included: 40029 for a code it never issued, 40163 for a code
// used twice, 40125 for a wrong secret), and — under `/standin/` — the
// part of WeChat's client that `wx.login` talks to: it issues a fresh code
// for an app, as the WeChat app does for a mini-program. Lectern is
// pointed at it with LECTERN_WECHAT_API_URL (see server.ts).
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** The app the stand-in knows: a test mini-program and its secret. */
export const MINI_APP = { appid: "wx1ec7e4000000e2e0", secret: `secret-${randomBytes(12).toString("hex")}` };
/** WeChat's published example session key (the WXBizDataCrypt demo). */
const SESSION_KEY = "tiihtNczf5v6AKRyjwEUhQ==";

export interface WeChatStandIn {
  url: string;
  close: () => Promise<void>;
}

export async function startWeChat(): Promise<WeChatStandIn> {
  const issued = new Map<string, string>(); // code → the person it is for
  const used = new Set<string>();
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://standin");
    const q = url.searchParams;
    const answer = (body: unknown) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === "/standin/wx-login") {
      // `who` names the person on the phone (a test may sign in several).
      const code = `0${randomBytes(15).toString("hex")}`;
      issued.set(code, q.get("who") ?? "learner");
      return answer({ code });
    }
    if (url.pathname === "/sns/jscode2session") {
      if (q.get("appid") !== MINI_APP.appid || q.get("secret") !== MINI_APP.secret) return answer({ errcode: 40125, errmsg: "invalid appsecret" });
      if (q.get("grant_type") !== "authorization_code") return answer({ errcode: 40002, errmsg: "invalid grant_type" });
      const code = q.get("js_code") ?? "";
      const who = issued.get(code);
      if (!who) return answer({ errcode: 40029, errmsg: "invalid code" });
      if (used.has(code)) return answer({ errcode: 40163, errmsg: "code been used" });
      used.add(code);
      return answer({ openid: `o-e2e-${who}`, session_key: SESSION_KEY });
    }
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ errcode: -1, errmsg: "no such API in the stand-in" }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
