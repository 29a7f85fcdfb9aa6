// The app: signs in with wx.login as it launches, so the first page only
// waits for the promise (`getApp().signedIn`).
const lectern = require("./lectern.js");

App({
  globalData: { user: null },
  signedIn: null,
  onLaunch: function () {
    const app = this;
    this.signedIn = lectern.signIn().then(function (session) {
      app.globalData.user = session.user;
      return session;
    });
    // Handled by the page that waits on it; this keeps the runtime quiet.
    this.signedIn.catch(function () {});
  },
});
