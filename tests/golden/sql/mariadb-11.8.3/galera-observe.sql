SET SESSION wsrep_dirty_reads = ON;
SHOW GLOBAL STATUS LIKE 'wsrep\_%';
SHOW GLOBAL VARIABLES LIKE 'wsrep\_%';
SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') AND ENGINE <> 'InnoDB' ORDER BY TABLE_SCHEMA, TABLE_NAME;
SELECT t.TABLE_SCHEMA, t.TABLE_NAME FROM information_schema.TABLES t LEFT JOIN information_schema.TABLE_CONSTRAINTS c ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_TYPE = 'PRIMARY KEY' WHERE t.TABLE_TYPE = 'BASE TABLE' AND t.ENGINE = 'InnoDB' AND t.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') AND c.CONSTRAINT_NAME IS NULL ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME;
SELECT plugin, authentication_string FROM mysql.user WHERE User = 'repltool_sst' AND Host = 'localhost';
