-- Run with -v ON_ERROR_STOP=1: every statement succeeds.
CREATE TABLE ps_script (a INTEGER PRIMARY KEY, b TEXT);
INSERT INTO ps_script VALUES (1, 'one');
INSERT INTO ps_script VALUES (2, 'two');
SELECT count(*) FROM ps_script;
