// The admin console: Vue 3, Element Plus (components imported where they
// are used), vue-router with one lazily loaded chunk per screen.
import { createApp } from "vue";
import "element-plus/theme-chalk/base.css";
import "element-plus/es/components/message/style/css";
import "element-plus/es/components/message-box/style/css";
import "./theme.css";

import { i18n } from "@lectern/shared/i18n";

import App from "./App.vue";
import { router } from "./router";

createApp(App).use(i18n).use(router).mount("#app");
