// What the error page says for each failure: zh-CN first, then English.
// Keys are Lectern's error codes, plus `wx_login` and `network` (the phone's side).
module.exports = {
  wx_login: ["微信登录失败，请稍后重试。", "WeChat sign-in failed. Please try again."],
  network: ["无法连接服务器，请检查网络后重试。", "Cannot reach the server. Check the network and try again."],
  sign_in_method_disabled: ["本机构未开启微信登录，请联系管理员。", "Your organisation has not enabled WeChat sign-in. Please contact its administrator."],
  invitation_required: ["您还没有账号，请联系机构获取邀请。", "You have no account yet. Ask your organisation for an invitation."],
  provider_not_configured: ["本小程序尚未在学习平台登记，请联系管理员。", "This mini-program is not registered with the learning platform. Please contact the administrator."],
  sign_in_rejected: ["登录凭证已失效，请重试。", "The sign-in code was refused. Please try again."],
  provider_unavailable: ["微信服务暂时不可用，请稍后重试。", "WeChat is unavailable right now. Please try again later."],
  account_locked: ["尝试次数过多，请稍后再试。", "Too many attempts. Please try again later."],
  rate_limited: ["操作过于频繁，请稍后再试。", "Too many requests. Please try again later."],
  unknown: ["出了点问题，请稍后重试。", "Something went wrong. Please try again."],
};
