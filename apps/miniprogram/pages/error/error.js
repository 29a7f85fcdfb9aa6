// Why the H5 app could not be opened, in zh-CN and English, and a way to
// start again (a fresh wx.login: its codes work once).
const messages = require("./messages.js");

Page({
  data: { code: "", zh: "", en: "" },
  onLoad: function (query) {
    const code = (query && query.code) || "unknown";
    const text = messages[code] || messages.unknown;
    this.setData({ code: code, zh: text[0], en: text[1] });
  },
  retry: function () {
    wx.reLaunch({ url: "/pages/index/index" });
  },
});
