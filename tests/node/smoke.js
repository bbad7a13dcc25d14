// node-postgres against weir: a parameterised query (extended protocol) and a plain one.
const { Client } = require('pg');
(async () => {
  const c = new Client({ host: '127.0.0.1', port: +process.argv[2], user: 'weir', database: 'weir' });
  await c.connect();
  const r = await c.query('SELECT k, v FROM kv WHERE k >= $1 ORDER BY k', [8]);
  console.log(JSON.stringify(r.rows));
  const s = await c.query('SELECT count(*) AS n FROM kv');
  console.log(s.rows[0].n);
  await c.end();
})().catch((e) => { console.error(e); process.exit(1); });
