// A real OpenID provider for Lectern's single sign-on tests and local
// development: the certified `oidc-provider` package, configured for one
// confidential client, authorisation code + PKCE only, RP-initiated logout.
//
// The one thing it does not do like a production provider is ask anyone
// anything: its login and consent "interaction" signs in the account named
// by the request's `login_hint` (default `alice`) at once, so tests can
// walk the redirects with a plain HTTP client (and Chromium the same way).
// With OIDC_LOGIN_FORM=1 it asks for credentials instead, as a real one
// does: a login page (account and password) whenever it has no session, so
// a browser test can see whether the provider's session really ended. The
// logout confirmation page submits itself.
//
// Settings (environment):
//   OIDC_PORT                    port on 127.0.0.1 (required)
//   OIDC_CLIENT_ID               default `lectern`
//   OIDC_CLIENT_SECRET           default `lectern-dev-secret`
//   OIDC_REDIRECT_URIS           comma-separated, required
//   OIDC_POST_LOGOUT_REDIRECT_URIS  comma-separated, optional
//   OIDC_LOGIN_FORM              `1`: ask for account and password (the
//                                password is OIDC_PASSWORD, default
//                                `provider-pass`, for every account)
//   OIDC_KEY_ID                  the signing key's `kid`; a new RSA key is
//                                made at every start, so restarting with
//                                another kid is a key rotation
//
// Prints `oidc-provider listening on <issuer>` once it accepts connections.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
if (!port) {
  console.error('OIDC_PORT is required');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const list = (v) => (v || '').split(',').map((s) => s.trim()).filter(Boolean);
const redirectUris = list(process.env.OIDC_REDIRECT_URIS);
if (redirectUris.length === 0) {
  console.error('OIDC_REDIRECT_URIS is required');
  process.exit(2);
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = privateKey.export({ format: 'jwk' });
jwk.kid = process.env.OIDC_KEY_ID || randomBytes(8).toString('hex');
jwk.alg = 'RS256';
jwk.use = 'sig';

const configuration = {
  clients: [
    {
      client_id: process.env.OIDC_CLIENT_ID || 'lectern',
      client_secret: process.env.OIDC_CLIENT_SECRET || 'lectern-dev-secret',
      redirect_uris: redirectUris,
      post_logout_redirect_uris: list(process.env.OIDC_POST_LOGOUT_REDIRECT_URIS),
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      // The confirmation form, submitted by itself (a browser runs the
      // script; an HTTP client posts the form's fields).
      logoutSource: async (ctx, form) => {
        ctx.body = `<!DOCTYPE html><html><body>${form}
<script>document.forms[0].insertAdjacentHTML('beforeend','<input type="hidden" name="logout" value="yes">');document.forms[0].submit();</script>
</body></html>`;
      },
    },
  },
  findAccount: async (ctx, id) => ({
    accountId: id,
    async claims() {
      return { sub: id, email: `${id}@hospital.example`, email_verified: true, name: id };
    },
  }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { Session: 3600, Interaction: 600, AuthorizationCode: 60, IdToken: 300, AccessToken: 300, Grant: 3600 },
};

const provider = new Provider(issuer, configuration);

const loginForm = process.env.OIDC_LOGIN_FORM === '1';
const password = process.env.OIDC_PASSWORD || 'provider-pass';
const escape = (v) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, hint, failed) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Test provider: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head><body>
<main><h1>Test provider</h1>${failed ? '<p role="alert">Wrong account or password.</p>' : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Account <input name="login" autocomplete="username" value="${escape(hint)}"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in at the provider</button></form></main></body></html>`;
}

async function formBody(req) {
  let raw = '';
  for await (const chunk of req) {
    raw += chunk;
    if (raw.length > 10000) break;
  }
  return new URLSearchParams(raw);
}

// The interaction: log in the hinted account at once (or, with
// OIDC_LOGIN_FORM, the one whose password was typed), grant what the
// client asked for.
provider.use(async (ctx, next) => {
  const match = /^\/interaction\/([^/]+)(\/login)?$/.exec(ctx.path);
  if (!match || (ctx.method !== 'GET' && !(match[2] && ctx.method === 'POST'))) {
    return next();
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params } = details;
  let result;
  if (prompt.name === 'login' && loginForm) {
    const form = match[2] ? await formBody(ctx.req) : null;
    if (!form || form.get('password') !== password || !form.get('login')) {
      ctx.type = 'html';
      ctx.body = loginPage(details.uid, (form && form.get('login')) || params.login_hint || '', !!form);
      return undefined;
    }
    result = { login: { accountId: String(form.get('login')) } };
  } else if (prompt.name === 'login') {
    result = { login: { accountId: String(params.login_hint || 'alice') } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) {
      grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    }
    if (prompt.details.missingOIDCClaims) {
      grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    }
    result = { consent: { grantId: await grant.save() } };
  }
  // Writes the redirect back to the authorisation endpoint.
  await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.respond = false;
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
