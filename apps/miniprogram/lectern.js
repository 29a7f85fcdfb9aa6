// Talking to Lectern from the mini-program: wx.login's code is exchanged
// at Lectern (which calls jscode2session itself: the app secret and the
// session key never reach the phone), the bearer token it answers is kept
// in memory only (wx.request has no cookie jar), and a single-use hand-off
// code is minted for the H5 app the web-view opens. Promises, not async
// functions, so no compile option is needed.
const config = require("./config.js");

/** A failure: `code` is Lectern's error code, or `wx_login` / `network`. */
function failure(code, message) {
  return { code: code, message: message || code };
}

function request(method, path, token, data) {
  return new Promise(function (resolve, reject) {
    const header = { "content-type": "application/json", accept: "application/json" };
    if (token) header.Authorization = "Bearer " + token;
    wx.request({
      url: config.apiBase.replace(/\/+$/, "") + path,
      method: method,
      header: header,
      data: data,
      dataType: "json",
      success: function (res) {
        if (res.statusCode >= 200 && res.statusCode < 300) {
          resolve(res.data);
          return;
        }
        const error = res.data && res.data.error;
        reject(failure(error && error.code ? error.code : "http_" + res.statusCode, error && error.message));
      },
      fail: function (err) {
        reject(failure("network", err && err.errMsg));
      },
    });
  });
}

/** wx.login: a code WeChat issues for this app, valid minutes, once. */
function wxLogin() {
  return new Promise(function (resolve, reject) {
    wx.login({
      success: function (res) {
        if (res.code) resolve(res.code);
        else reject(failure("wx_login", res.errMsg));
      },
      fail: function (err) {
        reject(failure("wx_login", err && err.errMsg));
      },
    });
  });
}

/** Signs in with wx.login: `{ token, user }` of a Lectern session. */
function signIn() {
  const appid = wx.getAccountInfoSync().miniProgram.appId;
  return wxLogin().then(function (code) {
    return request("POST", "/api/v1/auth/wechat/mini-program", null, { appid: appid, code: code });
  }).then(function (body) {
    return { token: body.token, user: body.user };
  });
}

/** The H5 URL, signed in: a fresh hand-off code in its fragment. */
function handoffUrl(token) {
  return request("POST", "/api/v1/auth/handoff", token).then(function (minted) {
    let fragment = "handoff=" + encodeURIComponent(minted.code);
    if (config.orgId) fragment += "&org=" + encodeURIComponent(config.orgId);
    return config.h5Url.split("#")[0] + "#" + fragment;
  });
}

module.exports = { signIn: signIn, handoffUrl: handoffUrl, request: request };
