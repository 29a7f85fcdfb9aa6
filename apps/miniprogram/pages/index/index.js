// The one page: once signed in, mints a hand-off code and shows the H5
// app in a web-view with it. Any failure goes to the error page, which
// says why (zh-CN, then English) and offers to try again.
const lectern = require("../../lectern.js");

Page({
  data: { url: "" },
  onLoad: function () {
    const page = this;
    const app = getApp();
    // The launch's sign-in, or — after a failure, when "try again"
    // relaunches this page — a fresh wx.login (its codes work once).
    if (!app.signedIn) app.signedIn = lectern.signIn();
    app.signedIn
      .then(function (session) {
        return lectern.handoffUrl(session.token);
      })
      .then(function (url) {
        page.setData({ url: url });
      })
      .catch(function (error) {
        app.signedIn = null;
        wx.redirectTo({ url: "/pages/error/error?code=" + encodeURIComponent((error && error.code) || "unknown") });
      });
  },
});
