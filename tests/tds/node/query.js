// Connect with tedious, run one query through execSql (RPC sp_executesql) and print one JSON line.
//
// usage: node query.js '{"server": "127.0.0.1", "port": 1433, "user": "sa", "password": "pw",
//                        "encrypt": true | false | "strict", "trustServerCertificate": false,
//                        "ca": "/path/ca.pem", "database": "db", "query": "SELECT 1",
//                        "ntlm": {"domain": "CORP"}, "batch": false, "debug": false}'
//
// Output: {"ok": true, "rows": [[1]], "rowCount": 1, "messages": [...]}
//      or {"ok": false, "stage": "connect"|"query", "error": {"message", "code", "number"}, ...}
'use strict';

const fs = require('fs');
const { Connection, Request } = require('tedious');

const config = JSON.parse(process.argv[2] || '{}');
const messages = [];
const debug = [];

const authentication = config.ntlm
  ? { type: 'ntlm', options: { userName: config.user, password: config.password, domain: config.ntlm.domain || '' } }
  : { type: 'default', options: { userName: config.user, password: config.password } };

const options = {
  port: config.port,
  encrypt: config.encrypt === undefined ? true : config.encrypt,
  trustServerCertificate: Boolean(config.trustServerCertificate),
  connectTimeout: config.connectTimeout || 15000,
  requestTimeout: config.requestTimeout || 15000,
  rowCollectionOnRequestCompletion: false,
};
if (config.database) options.database = config.database;
if (config.ca) options.cryptoCredentialsDetails = { ca: fs.readFileSync(config.ca, 'utf8') };
if (config.serverName) options.serverName = config.serverName;
if (config.debug) options.debug = { packet: true, data: true, payload: true, token: true };

let finished = false;
function finish(result) {
  if (finished) return;
  finished = true;
  result.messages = messages;
  if (config.debug) result.debug = debug;
  // exit only once the pipe has taken everything (large results exceed its 64 KiB buffer)
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

function describe(error) {
  const out = { message: String(error && error.message), code: error && error.code };
  if (error && error.number !== undefined) out.number = error.number;
  if (error && error.cause) out.cause = String(error.cause.message || error.cause);
  if (error && error.errors) out.errors = error.errors.map((e) => String(e.message));
  return out;
}

const connection = new Connection({ server: config.server, authentication, options });
connection.on('infoMessage', (info) => messages.push({ kind: 'info', number: info.number, message: info.message }));
connection.on('errorMessage', (err) => messages.push({ kind: 'error', number: err.number, message: err.message }));
connection.on('debug', (text) => { if (config.debug) debug.push(text); });
connection.on('error', (error) => finish({ ok: false, stage: 'connection', error: describe(error) }));

connection.connect((error) => {
  if (error) {
    finish({ ok: false, stage: 'connect', error: describe(error) });
    return;
  }
  const rows = [];
  const request = new Request(config.query || 'SELECT 1', (queryError, rowCount) => {
    if (queryError) {
      finish({ ok: false, stage: 'query', error: describe(queryError), rows });
      return;
    }
    const result = { ok: true, rows, rowCount };
    connection.on('end', () => finish(result));
    connection.close();
  });
  request.on('row', (columns) => rows.push(columns.map((column) => column.value)));
  if (config.batch) connection.execSqlBatch(request);
  else connection.execSql(request);
});

setTimeout(() => finish({ ok: false, stage: 'timeout', error: { message: 'query.js timed out' } }),
  config.timeout || 30000).unref();
