// A certified OpenID provider (panva/oidc-provider) for Foundry's tests, driven by
// tests/fakes/oidc_provider.py.
//
//   node provider.mjs PORT KEYS_FILE KID[,KID...] USERS_JSON
//
// Publishes the RSA keys named by the KIDs in its JWKS and signs with the first one. Keys are
// kept in KEYS_FILE (made on first use), so a restart with "new,old" rotates the signing key
// while the old one stays published, and a restart with "new" retires the old one.
// USERS_JSON maps a user (a client id, secret "secret", which is the token's sub) to its roles:
// {"alice": ["foundry-admin"], "bob": []}. Tokens are JWT access tokens from the
// client-credentials grant for the resource https://foundry.test/api, audience "foundry",
// with the user's "email" and "roles".
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const [port, keysFile, kidList, usersJson] = process.argv.slice(2);
const kids = kidList.split(',');
const users = JSON.parse(usersJson);
const stored = existsSync(keysFile) ? JSON.parse(readFileSync(keysFile, 'utf8')) : {};
for (const kid of kids) {
  if (!stored[kid]) {
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    stored[kid] = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  }
}
writeFileSync(keysFile, JSON.stringify(stored));

const provider = new Provider(`http://127.0.0.1:${port}`, {
  jwks: { keys: kids.map((kid) => stored[kid]) },
  clients: Object.keys(users).map((user) => ({
    client_id: user, client_secret: 'secret', grant_types: ['client_credentials'],
    redirect_uris: [], response_types: [],
  })),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'https://foundry.test/api',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        audience: 'foundry', scope: 'openid', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  ttl: { ClientCredentials: 600 },
  extraTokenClaims: (ctx, token) => ({ email: `${token.clientId}@example.com`, roles: users[token.clientId] ?? [] }),
});
provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
