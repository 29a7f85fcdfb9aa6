// The learner H5 app: Vue 3, Vant, vue-router with one lazily loaded chunk
// per screen. Works at 375 px in a WeChat or iOS webview (no JS-SDK: only
// what a plain web-view allows) and on desktop.
// First: takes a mini-program's hand-off code out of the address before
// the router reads it (see handoff.ts).
import { redeemHandoff } from "./handoff";
import { createApp, watch } from "vue";
import { Locale } from "vant";
import enUS from "vant/es/locale/lang/en-US";
import zhCN from "vant/es/locale/lang/zh-CN";
import "vant/es/toast/style";
import "./theme.css";

import { i18n } from "@lectern/shared/i18n";

import App from "./App.vue";
import { router } from "./router";

// Vant's own words (loading, confirm, empty states) follow the page's language.
watch(
  i18n.global.locale,
  (locale) => (locale === "en" ? Locale.use("en-US", enUS) : Locale.use("zh-CN", zhCN)),
  { immediate: true },
);

// Mounted once a hand-off (if any) is redeemed, so the router's first
// guard sees the session.
void redeemHandoff().then(() => createApp(App).use(i18n).use(router).mount("#app"));
