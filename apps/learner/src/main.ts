// The learner H5 app: Vue 3, Vant, vue-router with one lazily loaded chunk
// per screen. Works at 375 px in a WeChat or iOS webview (no JS-SDK: only
// what a plain web-view allows) and on desktop.
import { createApp } from "vue";
import "vant/es/toast/style";
import "./theme.css";

import { i18n } from "@lectern/shared/i18n";

import App from "./App.vue";
import { router } from "./router";

createApp(App).use(i18n).use(router).mount("#app");
