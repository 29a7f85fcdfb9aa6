// The learner app's screens. Each is its own chunk, loaded on first visit.
// Reviews, comments and questions live on the course and lesson screens;
// credits and certificates under "my learning".
import { createRouter, createWebHistory, type RouteRecordRaw } from "vue-router";

import { loadSession, onUnauthorised, session } from "@lectern/shared";
import { i18n } from "@lectern/shared/i18n";

declare module "vue-router" {
  interface RouteMeta {
    /** The catalogue key of the page title. */
    title: string;
    /** Reachable without signing in. */
    public?: boolean;
    /** Shows the tab bar. */
    tab?: boolean;
  }
}

const routes: RouteRecordRaw[] = [
  { path: "/", name: "home", component: () => import("./views/HomeView.vue"), meta: { title: "learner.home.title", tab: true } },
  { path: "/signin", name: "signin", component: () => import("./views/SignInView.vue"), meta: { title: "common.signIn", public: true } },
  { path: "/signup", name: "signup", component: () => import("./views/SignUpView.vue"), meta: { title: "learner.signup.title", public: true } },
  { path: "/signup/confirm", name: "signup-confirm", component: () => import("./views/SignUpConfirmView.vue"), meta: { title: "learner.signup.confirmTitle", public: true } },
  { path: "/invitation", name: "invitation", component: () => import("./views/InvitationView.vue"), meta: { title: "learner.invitation.title", public: true } },
  { path: "/disciplines", name: "disciplines", component: () => import("./views/DisciplinesView.vue"), meta: { title: "learner.disciplines.title", tab: true } },
  { path: "/search", name: "search", component: () => import("./views/SearchView.vue"), meta: { title: "learner.search.title", tab: true } },
  { path: "/courses/:courseId", name: "course", component: () => import("./views/CourseView.vue"), props: true, meta: { title: "learner.course.title" } },
  { path: "/courses/:courseId/lessons/:lessonId", name: "lesson", component: () => import("./views/LessonView.vue"), props: true, meta: { title: "learner.lesson.title" } },
  { path: "/me", name: "me", component: () => import("./views/MeView.vue"), meta: { title: "learner.me.title", tab: true } },
  { path: "/me/inbox", name: "inbox", component: () => import("./views/InboxView.vue"), meta: { title: "learner.inbox.title" } },
  { path: "/me/security", name: "security", component: () => import("./views/SecurityView.vue"), meta: { title: "learner.security.title" } },
  { path: "/:rest(.*)*", name: "not-found", component: () => import("./views/NotFoundView.vue"), meta: { title: "common.notFound", public: true } },
];

export const router = createRouter({ history: createWebHistory("/app/"), routes });

router.beforeEach(async (to) => {
  if (to.meta.public) return true;
  const me = await loadSession();
  if (!me) return { name: "signin", query: { next: to.fullPath } };
  return true;
});

router.afterEach((to) => {
  const t = i18n.global.t as (key: string) => string;
  document.title = `${t(to.meta.title)} · ${t("common.product")}`;
});

onUnauthorised(() => {
  const current = router.currentRoute.value;
  if (!current.meta.public) void router.replace({ name: "signin", query: { next: current.fullPath } });
});

export { session };
