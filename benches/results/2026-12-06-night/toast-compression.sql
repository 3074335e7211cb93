\timing off
DROP TABLE IF EXISTS toast_t;
CREATE TABLE toast_t (id serial, payload bytea);
-- envelope-like: 60 pieces of ~300 bytes with varying numbers
CREATE TEMP TABLE src AS SELECT string_agg(convert_to(format('{"type":1,"target":"ReceiveGroupMessage","arguments":["load-group","load","0:%s:%s:%s:%s"]}%s', i, 1796592167010274+i*37, 1796592167010274+i*37, repeat('.', 5), md5(i::text)), 'UTF8') || convert_to(format('msgpack-%s-%s', i, md5((i*7)::text)),'UTF8'), ''::bytea) AS p FROM generate_series(1,60) i;
SELECT length(p) FROM src;
\timing on
SET default_toast_compression = pglz;
INSERT INTO toast_t (payload) SELECT p || int4send(g) FROM src, generate_series(1,2000) g;
SET default_toast_compression = lz4;
INSERT INTO toast_t (payload) SELECT p || int4send(g) FROM src, generate_series(1,2000) g;
ALTER TABLE toast_t ALTER COLUMN payload SET STORAGE EXTERNAL;
INSERT INTO toast_t (payload) SELECT p || int4send(g) FROM src, generate_series(1,2000) g;
\timing off
SELECT pg_column_compression(payload), count(*), avg(pg_column_size(payload)) FROM toast_t GROUP BY 1;
DROP TABLE toast_t;
