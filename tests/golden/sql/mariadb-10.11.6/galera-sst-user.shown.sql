CREATE USER IF NOT EXISTS 'repltool_sst'@'localhost' IDENTIFIED BY PASSWORD '***';
ALTER USER 'repltool_sst'@'localhost' IDENTIFIED BY PASSWORD '***';
GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO 'repltool_sst'@'localhost';
SET GLOBAL wsrep_sst_auth = 'repltool_sst:***';
