'use strict';
// Starts an Unleash 8 server for local tests from a JSON config file written by start.py:
//
//   node server.js /path/to/server-config.json
//
// The config file holds the listen port, the PostgreSQL connection and the two initial API
// tokens. Everything that would reach the internet (version check, telemetry) is turned off.

const fs = require('node:fs');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

// Where node_modules/unleash-server is: the config's nodeDir, else node/ next to this file.
const DEFAULT_NODE_DIR = path.join(__dirname, 'node');

function readConfig(file) {
  const raw = fs.readFileSync(file, 'utf8');
  const cfg = JSON.parse(raw);
  for (const key of ['port', 'db', 'adminToken', 'clientToken', 'secret']) {
    if (cfg[key] === undefined) {
      throw new Error(`config ${file} misses "${key}"`);
    }
  }
  return cfg;
}

// unleash-server 8 is an ES module. Node >= 20.19 can require() it; older Node 20 needs import().
async function loadUnleash(nodeDir) {
  const resolved = require.resolve('unleash-server', { paths: [nodeDir] });
  try {
    return require(resolved);
  } catch (err) {
    if (err && (err.code === 'ERR_REQUIRE_ESM' || err.code === 'ERR_REQUIRE_ASYNC_MODULE')) {
      return import(pathToFileURL(resolved).href);
    }
    throw err;
  }
}

function splitToken(secret) {
  // "<project>:<environment>.<random>"
  const [project, rest] = secret.split(':');
  const environment = rest.split('.')[0];
  return { project, environment };
}

async function main() {
  const configFile = process.argv[2];
  if (!configFile) {
    console.error('usage: node server.js CONFIG.json');
    process.exit(2);
  }
  const cfg = readConfig(configFile);
  if (cfg.pidFile) {
    fs.writeFileSync(cfg.pidFile, `${process.pid}\n`);
  }

  // Belt and braces: these are read from the environment by unleash-server as well.
  process.env.CHECK_VERSION = 'false';
  process.env.SEND_TELEMETRY = 'false';

  const unleash = await loadUnleash(cfg.nodeDir || DEFAULT_NODE_DIR);
  const admin = splitToken(cfg.adminToken);
  const client = splitToken(cfg.clientToken);
  const url = `http://${cfg.host || '127.0.0.1'}:${cfg.port}`;

  const instance = await unleash.start({
    db: {
      host: cfg.db.host,
      port: cfg.db.port,
      user: cfg.db.user,
      password: cfg.db.password,
      database: cfg.db.database,
      ssl: false,
      applicationName: 'modelflags-unleash',
    },
    server: {
      host: cfg.host || '127.0.0.1',
      port: cfg.port,
      unleashUrl: url,
      secret: cfg.secret,
      enableRequestLogger: false,
    },
    authentication: {
      // Default UI login admin / unleash4all stays available (createAdminUser defaults to true).
      initApiTokens: [
        {
          tokenName: 'modelflags-admin',
          type: 'admin',
          projects: [admin.project],
          environment: admin.environment,
          secret: cfg.adminToken,
        },
        {
          tokenName: 'modelflags-backend',
          type: 'backend',
          projects: [client.project],
          environment: client.environment,
          secret: cfg.clientToken,
        },
      ],
    },
    versionCheck: { enable: false },
    telemetry: false,
    logLevel: cfg.logLevel || 'warn',
  });
  const address = instance.server && instance.server.address();
  console.log(`unleash ${instance.version} listening on ${url} (${JSON.stringify(address)})`);
}

main().catch((err) => {
  console.error('unleash failed to start:', err);
  process.exit(1);
});
