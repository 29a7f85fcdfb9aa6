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

// Element Plus tables scroll inside a wrapper a keyboard cannot reach (on
// a phone every wide table does): make each such wrapper focusable, as
// WCAG's "scrollable region" rule asks (axe: scrollable-region-focusable).
new MutationObserver(() => {
  for (const wrap of document.querySelectorAll<HTMLElement>(".el-table .el-scrollbar__wrap:not([tabindex])")) {
    wrap.tabIndex = 0;
  }
}).observe(document.body, { childList: true, subtree: true });
