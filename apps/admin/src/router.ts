// The console's screens, each its own chunk, each with the roles whose
// permissions its API needs (the server decides; this only hides menu
// entries a role could not use). Screens whose API is not there yet
// (partner keys, asset retry and delete) are added here as a route and a
// view when it is.
import { createRouter, createWebHistory, type RouteRecordRaw } from "vue-router";

import { loadSession, onUnauthorised, type Role } from "@lectern/shared";
import { i18n } from "@lectern/shared/i18n";

declare module "vue-router" {
  interface RouteMeta {
    title: string;
    public?: boolean;
    /** Who sees it in the menu; everyone signed in when absent. */
    roles?: Role[];
    /** Its menu icon (an Element Plus icon name). */
    icon?: string;
    menu?: boolean;
  }
}

const editors: Role[] = ["content_admin", "super_admin"];
const staff: Role[] = ["expert", "content_admin", "super_admin"];

export const routes: RouteRecordRaw[] = [
  { path: "/", name: "dashboard", component: () => import("./views/DashboardView.vue"), meta: { title: "admin.dashboard.title", roles: editors, icon: "DataLine", menu: true } },
  { path: "/reports", name: "reports", component: () => import("./views/ReportsView.vue"), meta: { title: "admin.reports.title", roles: editors, icon: "TrendCharts", menu: true } },
  { path: "/assets", name: "assets", component: () => import("./views/AssetsView.vue"), meta: { title: "admin.assets.title", roles: editors, icon: "VideoCamera", menu: true } },
  { path: "/courses", name: "courses", component: () => import("./views/CoursesView.vue"), meta: { title: "admin.courses.title", roles: staff, icon: "Reading", menu: true } },
  { path: "/courses/:courseId", name: "course", component: () => import("./views/CourseEditView.vue"), props: true, meta: { title: "admin.course.title", roles: staff } },
  { path: "/disciplines", name: "disciplines", component: () => import("./views/DisciplinesView.vue"), meta: { title: "admin.disciplines.title", roles: editors, icon: "Files", menu: true } },
  { path: "/experts", name: "experts", component: () => import("./views/ExpertsView.vue"), meta: { title: "admin.experts.title", roles: editors, icon: "Avatar", menu: true } },
  { path: "/invitations", name: "invitations", component: () => import("./views/InvitationsView.vue"), meta: { title: "admin.invitations.title", roles: editors, icon: "Message", menu: true } },
  { path: "/moderation", name: "moderation", component: () => import("./views/ModerationView.vue"), meta: { title: "admin.moderation.title", roles: editors, icon: "ChatDotSquare", menu: true } },
  { path: "/questions", name: "questions", component: () => import("./views/QuestionsView.vue"), meta: { title: "admin.questions.title", roles: ["expert"], icon: "QuestionFilled", menu: true } },
  { path: "/credits", name: "credits", component: () => import("./views/CreditsView.vue"), meta: { title: "admin.credits.title", roles: editors, icon: "Medal", menu: true } },
  { path: "/users", name: "users", component: () => import("./views/UsersView.vue"), meta: { title: "admin.users.title", roles: editors, icon: "User", menu: true } },
  { path: "/webhooks", name: "webhooks", component: () => import("./views/WebhooksView.vue"), meta: { title: "admin.webhooks.title", roles: editors, icon: "Connection", menu: true } },
  { path: "/audit", name: "audit", component: () => import("./views/AuditView.vue"), meta: { title: "admin.audit.title", roles: ["super_admin"], icon: "Document", menu: true } },
  { path: "/settings", name: "settings", component: () => import("./views/SettingsView.vue"), meta: { title: "admin.settings.title", roles: ["super_admin"], icon: "Setting", menu: true } },
  { path: "/signin", name: "signin", component: () => import("./views/SignInView.vue"), meta: { title: "common.signIn", public: true } },
  { path: "/:rest(.*)*", name: "not-found", component: () => import("./views/NotFoundView.vue"), meta: { title: "common.notFound", public: true } },
];

export const router = createRouter({ history: createWebHistory("/admin/"), routes });

router.beforeEach(async (to) => {
  if (to.meta.public) return true;
  const me = await loadSession();
  if (!me) return { name: "signin", query: { next: to.fullPath } };
  if (to.name === "dashboard" && !to.meta.roles?.includes(me.role)) return { name: "courses" };
  return true;
});

router.afterEach((to) => {
  const t = i18n.global.t as (key: string) => string;
  document.title = `${t(to.meta.title)} · ${t("admin.product")}`;
});

onUnauthorised(() => {
  const current = router.currentRoute.value;
  if (!current.meta.public) void router.replace({ name: "signin", query: { next: current.fullPath } });
});
