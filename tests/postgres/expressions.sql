-- One expression per line, each run as `SELECT <expr>` on weir and on a real PostgreSQL
-- server; column names and text output must match, except for the expressions that
-- docs/postgres-compatibility.md lists with the reason they differ.
-- integers
1
-1
0
2147483647
-2147483648
9223372036854775807
-9223372036854775807
32767::int2
(-32768)::smallint
42::int4
42::bigint
'123'::int
' 7 '::int8
1 + 1
7 - 10
6 * 7
7 / 2
-7 / 2
7 % 3
-7 % 3
abs(-5)
mod(7, 3)
mod(-7, 3)
mod(10000::bigint, 7)
2147483647::bigint + 1
1 = 1
1 < 2
3 >= 4
1 <> 1
greatest(1, 5, 3)
least(4, 2, 8)
coalesce(NULL, 2, 3)
nullif(1, 1)
nullif(1, 2)
gcd(12, 18)
lcm(4, 6)
-- floats
1.0::float8
1.5::float8
-2.25::float8
0.1::float8
0.1::float8 + 0.2::float8
1e15::float8
1e14::float8
1e16::float8
123456789012345678::float8
1e-4::float8
1e-5::float8
0.00012345::float8
1.5e300::float8
5e-324::float8
'-0'::float8
'NaN'::float8
'Infinity'::float8
'-Infinity'::float8
1/3.0::float8
2.0::float8 / 3
1.5::float4
0.1::float4
1234567::float4
123456.7::float4
12345678::float4
1e6::float4
'NaN'::real
3.14159::double precision
CAST(2 AS double precision)
sqrt(2::float8)
sqrt(16::float8)
power(2::float8, 10)
exp(1::float8)
ln(10::float8)
log(100::float8)
floor(-2.5::float8)
ceil(2.1::float8)
round(2.5::float8)
round(-2.5::float8)
trunc(2.7::float8)
abs(-1.5::float8)
sign(-3::float8)
pi()
degrees(pi())
radians(180::float8)
sin(0::float8)
cos(0::float8)
atan2(1::float8, 1::float8)
cbrt(27::float8)
1.5::float8 * 2
10::float8 / 4
-- numeric
1.5
0.1
-0.5
123.456
1.50::numeric(10,2)
1.5::decimal(10,2)
-1.5::numeric(10,3)
0::numeric(5,2)
12345.6789::numeric(10,2)
1::numeric
'2.5'::numeric
0::numeric
'-0.125'::numeric
100::numeric
1.5 + 2.25
1.5 * 2
10.0 / 4
round(2.567, 2)
round(2.5)
trunc(2.567, 1)
abs(-1.25)
floor(-1.5)
ceil(1.2)
'3.14'::numeric(4,2)
99999999.99::numeric(10,2)
-- text
'hello'
''
'it''s'
'ünïcödé'
'a' || 'b'
'a' || 1
upper('abc')
lower('ABC')
length('hello')
char_length('héllo')
octet_length('héllo')
substring('hello', 2, 3)
substring('hello' from 2 for 2)
position('l' in 'hello')
strpos('hello', 'l')
replace('hello', 'l', 'L')
reverse('abc')
repeat('ab', 3)
lpad('5', 3, '0')
rpad('5', 3, '0')
trim('  x  ')
ltrim('  x')
rtrim('x  ')
btrim('xxaxx', 'x')
initcap('hello world')
left('hello', 2)
right('hello', 2)
split_part('a,b,c', ',', 2)
concat('a', 'b', 'c')
concat_ws('-', 'a', 'b')
starts_with('hello', 'he')
md5('abc')
ascii('A')
chr(65)
to_hex(255)
'abc' LIKE 'a%'
'abc' ILIKE 'A%'
'abc' < 'abd'
'x'::varchar
'x'::text
'x'::char(3)
'tab	in'
'line' || chr(10) || 'break'
'back\slash'
'"quoted"'
-- booleans
true
false
NOT true
true AND false
true OR false
1 < 2 AND 2 < 3
'true'::boolean
't'::bool
NULL::boolean
true IS TRUE
NULL IS NULL
1 IS DISTINCT FROM 2
-- nulls
NULL
NULL::int
NULL::text
NULL + 1
-- dates
date '2020-01-01'
date '1999-12-31'
'2024-02-29'::date
date '2020-01-01' + 1
date '2020-03-01' - date '2020-02-01'
date '2020-01-01' + interval '1 month'
current_date = current_date
extract(year from date '2020-05-17')
extract(month from date '2020-05-17')
extract(dow from date '2020-05-17')
date_trunc('month', date '2020-05-17')
date_part('day', date '2020-05-17')
make_date(2020, 5, 17)
-- times
time '01:02:03'
time '23:59:59.5'
time '12:00:00.123456'
'10:30'::time
time '01:00' + interval '30 minutes'
extract(hour from time '13:45:00')
-- timestamps
timestamp '2020-04-15 12:02:00'
timestamp '2020-04-15 12:02:00.5'
timestamp '2020-04-15 12:02:00.123456'
timestamp '2020-04-15 12:02:00.120'
timestamp '2020-04-15'
'2020-04-15 12:02:00'::timestamp
timestamp '1970-01-01 00:00:00'
timestamp '2020-04-15 12:02'
timestamp '2020-01-01 00:00:00' + interval '1 day'
timestamp '2020-01-01 00:00:00' + interval '90 minutes'
timestamp '2020-01-01 00:00:00' - interval '1 second'
timestamp '2020-01-02 00:00:00' - timestamp '2020-01-01 12:00:00'
timestamp '2020-03-01' - timestamp '2020-01-01'
date_trunc('hour', timestamp '2020-04-15 12:34:56')
date_trunc('day', timestamp '2020-04-15 12:34:56')
date_trunc('minute', timestamp '2020-04-15 12:34:56.789')
date_trunc('week', timestamp '2020-04-15 12:34:56')
extract(epoch from timestamp '2020-01-01 00:00:00')
extract(second from timestamp '2020-01-01 00:00:01.5')
extract(year from timestamp '2020-04-15 12:34:56')
date_part('hour', timestamp '2020-04-15 12:34:56')
to_timestamp(0)
to_timestamp(1586952000)
timestamp '2020-04-15 12:00:00' < timestamp '2020-04-15 13:00:00'
CAST('2020-04-15 12:00:00' AS timestamp)
to_char(timestamp '2020-04-05 14:07:09.123', 'YYYY-MM-DD HH24:MI:SS.MS')
to_char(timestamp '2020-04-05 14:07:09', 'yyyy-mm-dd')
to_char(timestamp '2020-04-05 04:07:09', 'HH12:MI AM')
to_char(timestamp '2020-04-05 14:07:09', 'HH:mm')
to_char(timestamp '2020-04-05 14:07:09', 'Dy DD Mon YY, DDD')
to_char(timestamp '2020-04-05 14:07:09', '"day" DD "at" HH24')
to_char(date '2020-04-05', 'YYYY/MM/DD')
-- timestamptz
timestamptz '2020-01-01 00:00:00+00'
timestamptz '2020-07-01 12:00:00+02'
timestamptz '2020-07-01 12:00:00.25+00'
'2020-01-01 00:00:00+00'::timestamptz
timestamp with time zone '2020-06-15 08:30:00-05'
timestamptz '2020-01-01 00:00:00+00' + interval '1 hour'
now() = now()
now() - now()
-- intervals
interval '1 day'
interval '2 days'
interval '1 day 2 hours'
interval '-1 day'
interval '1 hour'
interval '90 minutes'
interval '1.5 seconds'
interval '0.000001 seconds'
interval '1 month'
interval '2 months'
interval '1 year'
interval '14 months'
interval '1 year 2 months 3 days'
interval '1 week'
interval '21 days 23:59:59'
interval '-00:00:01'
interval '00:00:01.5'
interval '@ 1 day 02:00 ago'
interval '1 year 2 months 3 days 04:05:06'
'1 day 03:00'::interval
interval '-1 second'
interval '0 seconds'
interval '36 hours'
interval '1 day' + interval '1 hour'
interval '1 hour' * 3
interval '1 day' - interval '2 days'
interval '1 hour' / 2
2 * interval '1 day 01:00'
interval '1 month' * 1.5
interval '1 mon' / 7
interval '1 day' / 3
interval '1 year 2 mons 3 days 04:05:06' * -0.25
interval '10 days' * 0.1::float8
-interval '1 day'
interval '1 day -2 hours'
interval '-1 day +2 hours'
interval '1 year -1 month'
interval '10' second
'1 day'::interval
make_interval(0, 0, 0, 1)
-- bytea
'\xdeadbeef'::bytea
''::bytea
'abc'::bytea
decode('616263', 'hex')
-- arrays
ARRAY[1, 2, 3]
ARRAY['a', 'b']
ARRAY['a b', 'c']
ARRAY['', 'x']
ARRAY['NULL', 'y']
ARRAY[1.5, 2.5]
ARRAY[1, NULL, 3]
ARRAY[true, false]
ARRAY[[1, 2], [3, 4]]
array_length(ARRAY[1, 2, 3], 1)
cardinality(ARRAY[1, 2, 3])
(ARRAY[10, 20, 30])[2]
array_append(ARRAY[1, 2], 3)
array_cat(ARRAY[1], ARRAY[2, 3])
array_position(ARRAY['a', 'b'], 'b')
-- aggregates over one row
count(*)
count(1)
sum(1)
sum(1.5)
sum(2::float8)
avg(1::bigint)
avg(2.5::float8)
min(3)
max('z')
bool_and(true)
string_agg('a', ',')
array_agg(1)
-- conditional
CASE WHEN 1 > 0 THEN 'yes' ELSE 'no' END
CASE 2 WHEN 1 THEN 'one' WHEN 2 THEN 'two' END
CASE WHEN false THEN 1 END
(SELECT 1)
(SELECT max(x) FROM (VALUES (1), (5)) AS t(x))
EXISTS (SELECT 1)
ARRAY(SELECT x FROM (VALUES (3), (1), (2)) AS t(x) ORDER BY x)
ARRAY(SELECT x * 2 FROM (VALUES (1), (2)) AS t(x) WHERE x > 1)
1 IN (1, 2, 3)
5 BETWEEN 1 AND 10
-- the session's TimeZone applies to timestamptz output
SET TimeZone = 'America/New_York'
current_setting('TimeZone')
timestamptz '2020-01-01 00:00:00+00'
timestamptz '2020-07-01 12:00:00+00'
timestamptz '2020-03-08 07:30:00+00'
to_timestamp(0)
SET TimeZone = 'Asia/Kolkata'
timestamptz '2020-01-01 00:00:00+00'
timestamptz '2020-01-01 00:00:00.5+00'
SET TimeZone = 'UTC'
timestamptz '2020-01-01 00:00:00+00'
current_setting('TimeZone')
-- settings and catalog functions
current_setting('standard_conforming_strings')
current_setting('DateStyle')
pg_type_is_visible(23)
-- catalog helpers
pg_size_pretty(0::bigint)
pg_size_pretty(10239::bigint)
pg_size_pretty(10240::bigint)
pg_size_pretty(-10240::bigint)
pg_size_pretty(10485247::bigint)
pg_size_pretty(10485759::bigint)
pg_size_pretty(1000000000::bigint)
pg_size_pretty(9223372036854775807::bigint)
json_build_object('a', 1, 'b', 'x', 'c', true, 'd', NULL)
json_build_object('n', 1.5::float8)
-- jsonb
'{"b":1, "a":[1,2]}'::jsonb
'{"a":1,"a":2}'::jsonb
'[1, 1.50, 1e2, -0, 0.5e-1, "x\ty"]'::jsonb
'{"bb":{"y":null,"x":true},"a":"é","ccc":[]}'::jsonb
'{"a":{"b":[10,20]}}'::jsonb -> 'a'
'{"a":{"b":[10,20]}}'::jsonb -> 'a' -> 'b' ->> 1
'[1,2,3]'::jsonb -> -1
'[1,2,3]'::jsonb -> 5
'{"a":"text"}'::jsonb ->> 'a'
'{"a":null}'::jsonb ->> 'a'
'{"a":null}'::jsonb -> 'a'
'{"a":1}'::jsonb -> 'missing'
'"str"'::jsonb
'null'::jsonb
'  {"k" : "v\u00e9\n"}  '::jsonb
