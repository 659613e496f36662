-- Run with -v ON_ERROR_STOP=1: psql stops at the duplicate key (exit 3),
-- so the row after it is never inserted.
INSERT INTO ps_script VALUES (3, 'three');
INSERT INTO ps_script VALUES (1, 'duplicate');
INSERT INTO ps_script VALUES (4, 'never');
