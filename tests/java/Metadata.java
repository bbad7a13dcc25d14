// What Metabase and DBeaver ask through pgjdbc's DatabaseMetaData when they sync a
// database, printed one line per call. Run with `java -cp <pgjdbc.jar> Metadata.java <port>`.
import java.sql.*;
import java.util.ArrayList;
import java.util.List;

public class Metadata {
    static String rows(ResultSet rs, String... columns) throws SQLException {
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            List<String> values = new ArrayList<>();
            for (String c : columns) values.add(rs.getString(c));
            out.add(String.join("/", values));
        }
        return String.join(" ", out);
    }

    static void print(String what, String rows) {
        System.out.println(rows.isEmpty() ? what + ":" : what + ": " + rows);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/weir";
        try (Connection c = DriverManager.getConnection(url, "weir", "")) {
            DatabaseMetaData m = c.getMetaData();
            print("schemas", rows(m.getSchemas(), "TABLE_SCHEM"));
            String[] kinds = {"TABLE", "VIEW", "MATERIALIZED VIEW"};
            print("tables", rows(m.getTables(null, "public", "%", kinds), "TABLE_NAME", "TABLE_TYPE"));
            for (String t : new String[] {"ty", "per_id"}) {
                print("columns of " + t,
                      rows(m.getColumns(null, "public", t, "%"), "COLUMN_NAME", "TYPE_NAME", "DATA_TYPE",
                           "IS_NULLABLE"));
            }
            print("primary key of ty", rows(m.getPrimaryKeys(null, "public", "ty"), "COLUMN_NAME"));
            print("foreign keys of ty", rows(m.getImportedKeys(null, "public", "ty"), "FKCOLUMN_NAME"));
            print("indexes of ty", rows(m.getIndexInfo(null, "public", "ty", false, false), "INDEX_NAME",
                                        "COLUMN_NAME", "NON_UNIQUE", "ORDINAL_POSITION", "ASC_OR_DESC"));
            List<String> types = new ArrayList<>();
            try (ResultSet rs = m.getTypeInfo()) {
                while (rs.next()) {
                    String name = rs.getString("TYPE_NAME");
                    if (List.of("int4", "numeric", "text", "timestamptz", "jsonb").contains(name)) {
                        types.add(name + "/" + rs.getInt("DATA_TYPE"));
                    }
                }
            }
            print("types", String.join(" ", types));
            try (Statement s = c.createStatement()) {
                s.execute("INSERT INTO ty VALUES (1, 12.34, DATE '2024-05-01')");
            }
            try (PreparedStatement p = c.prepareStatement("SELECT id, n FROM ty WHERE id = ?")) {
                p.setInt(1, 1);
                print("rows", rows(p.executeQuery(), "id", "n"));
            }
        }
    }
}
