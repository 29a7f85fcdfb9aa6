// Where this mini-program finds Lectern. An organisation edits these three
// lines (and registers both domains in the mini-program's admin console:
// see README.md) before uploading it.
module.exports = {
  // Lectern's API, called with wx.request: a 「request 合法域名」 (HTTPS).
  apiBase: "https://learn.example.org",
  // The learner H5 app opened in the web-view: a 「业务域名」 (HTTPS).
  h5Url: "https://learn.example.org/app/",
  // Optional: the organisation's id. When set, the H5 refuses a hand-off
  // code of any other organisation.
  orgId: "",
};
